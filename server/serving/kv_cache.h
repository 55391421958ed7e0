// KvBlockPool: the preallocated, paged memory of every session's KV cache.
//
//   auto pool = KvBlockPool::Create(/*budget_bytes=*/1 << 30,
//                                   KvBlockPool::PageBytesFor(models));
//   std::vector<int32_t> pages;
//   if (pool->Allocate(3, &pages)) { ... pool->Release(pages); }
//   KvPoolView view = pool->ViewFor(*model);  // where block b's K/V live
//
// The budget (--kv_cache_bytes) is reserved as ONE allocation at start-up and
// cut into equal pages; a page holds one block of kBlockTokens tokens of one
// session: its K block (num_kv_heads x kBlockTokens x head_dim elements) in
// the K half of the pool and its V block, same size, at the same offset in
// the V half (laid out as kernels/paged_attention.h says), in the model's
// kv_cache_dtype. The page size fits the blocks of every model served at
// start-up (their least common multiple, unless that is more than 8 times
// the largest), so pages of every model are interchangeable: long and short
// sessions, and sessions of different models, never fragment the pool, and
// it never grows (the budget is never exceeded). A model whose block does
// not divide the page cannot hold sessions (FAILED_PRECONDITION).
//
// Ownership: the pool owns its memory; views and page numbers borrow it and
// are valid until the pool is destroyed.
//
// Thread-safety: NOT internally synchronized. SessionTable calls every
// mutating method under its own lock; the executor reads and writes page
// contents (through views) only for pages a running step owns.
#ifndef ATTNSERVE_SERVER_SERVING_KV_CACHE_H_
#define ATTNSERVE_SERVER_SERVING_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/models/model_repository.h"

namespace attn::server {

// Where the blocks of one model's sessions live, in the kernel's terms
// (kernels::KvPool): kernel block k's K is at k_base + k * block elements,
// its V at v_base + k * block elements. Page p is kernel block
// p * blocks_per_page (a page may hold several of a small model's blocks;
// only the first is used).
struct KvPoolView {
  void* k_base = nullptr;
  void* v_base = nullptr;
  int64_t num_blocks = 0;       // kernel blocks in the pool
  int64_t blocks_per_page = 1;  // kernel block of page p = p * this
  int64_t block_tokens = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  bool bf16 = false;  // element type: bf16 (2 bytes) or fp32 (4 bytes)
};

class KvBlockPool {
 public:
  // Tokens per block (page). Fixed: the kernel's paged layout uses 16.
  static constexpr int64_t kBlockTokens = 16;

  // The default budget: a quarter of physical memory, at most 4 GiB.
  static int64_t DefaultBytes();

  // Bytes of one model's block of K plus V (one page's payload).
  static int64_t BlockBytes(const Model& model);

  // Page size (K plus V) for `models`: the least common multiple of their
  // BlockBytes, or the largest rounded up to 64 bytes when the multiple is
  // more than 8 times the largest. At least 64.
  static int64_t PageBytesFor(
      const std::vector<std::shared_ptr<const Model>>& models);

  // Reserves floor(budget_bytes / page_bytes) pages in one allocation.
  // Errors: INVALID_ARGUMENT when budget_bytes < page_bytes or page_bytes <
  // 1; RESOURCE_EXHAUSTED when the memory cannot be reserved.
  static absl::StatusOr<std::unique_ptr<KvBlockPool>> Create(
      int64_t budget_bytes, int64_t page_bytes);

  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  int64_t page_bytes() const { return page_bytes_; }
  int64_t total_pages() const { return total_pages_; }
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_bytes() const {
    return (total_pages_ - free_pages()) * page_bytes_;
  }
  int64_t capacity_bytes() const { return total_pages_ * page_bytes_; }

  // Appends `n` free pages to `out` and returns true; returns false (and
  // takes nothing) when fewer than `n` are free.
  bool Allocate(int64_t n, std::vector<int32_t>* out);

  // Returns pages to the free list and their memory frames to the OS
  // (madvise), so that RSS falls. REQUIRES: each was allocated and not yet
  // released.
  void Release(absl::Span<const int32_t> pages);

  // The layout of `model`'s blocks in this pool. Errors: FAILED_PRECONDITION
  // when its block is larger than a page.
  absl::StatusOr<KvPoolView> ViewFor(const Model& model) const;

 private:
  KvBlockPool(uint8_t* base, size_t mapped_bytes, int64_t page_bytes,
              int64_t total_pages);

  // Start of the K half and of the V half.
  uint8_t* k_half() const { return base_; }
  uint8_t* v_half() const { return base_ + total_pages_ * page_bytes_ / 2; }

  uint8_t* const base_;
  const size_t mapped_bytes_;
  const int64_t page_bytes_;
  const int64_t total_pages_;
  std::vector<int32_t> free_;  // a stack: the most recently freed is reused
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_KV_CACHE_H_
