#include "server/serving/kv_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "server/serving/inflight_budget.h"

namespace attn::server {
namespace {

int64_t ElementBytes(const Model& model) {
  return model.config.kv_cache_dtype == "bfloat16" ? 2 : 4;
}

// Gives the OS page frames wholly inside [begin, begin + bytes) back, so
// that a freed block stops counting in the process's RSS (the next write
// faults in a zero page).
void DiscardFrames(uint8_t* begin, int64_t bytes) {
  static const uintptr_t frame = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo =
      (reinterpret_cast<uintptr_t>(begin) + frame - 1) / frame * frame;
  const uintptr_t hi =
      (reinterpret_cast<uintptr_t>(begin) + static_cast<uintptr_t>(bytes)) /
      frame * frame;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

}  // namespace

int64_t KvBlockPool::DefaultBytes() {
  // The same rule as the in-flight budget's default.
  return InflightBudget::DefaultLimit();
}

int64_t KvBlockPool::BlockBytes(const Model& model) {
  return 2 * model.attention.num_kv_heads * kBlockTokens *
         model.attention.head_dim * ElementBytes(model);
}

int64_t KvBlockPool::PageBytesFor(
    const std::vector<std::shared_ptr<const Model>>& models) {
  int64_t largest = 64;
  int64_t lcm = 64;
  for (const auto& model : models) {
    const int64_t b = BlockBytes(*model);
    largest = std::max(largest, b);
    if (lcm <= (int64_t{1} << 40)) lcm = std::lcm(lcm, b);
  }
  if (lcm <= 8 * largest) return lcm;
  return (largest + 63) / 64 * 64;
}

absl::StatusOr<std::unique_ptr<KvBlockPool>> KvBlockPool::Create(
    int64_t budget_bytes, int64_t page_bytes) {
  if (page_bytes < 1 || budget_bytes < page_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_cache_bytes is ", budget_bytes, "; it must hold at least one ",
        page_bytes, "-byte block (", kBlockTokens,
        " tokens of K and V of the largest model)"));
  }
  const int64_t total_pages =
      std::min<int64_t>(budget_bytes / page_bytes, int64_t{1} << 30);
  const size_t mapped = static_cast<size_t>(total_pages * page_bytes);
  // One anonymous mapping: reserved now, committed by the OS page by page as
  // blocks are first written; never grown.
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot reserve ", mapped,
                     " bytes for the KV cache; lower --kv_cache_bytes"));
  }
  return std::unique_ptr<KvBlockPool>(new KvBlockPool(
      static_cast<uint8_t*>(p), mapped, page_bytes, total_pages));
}

KvBlockPool::KvBlockPool(uint8_t* base, size_t mapped_bytes, int64_t page_bytes,
                         int64_t total_pages)
    : base_(base),
      mapped_bytes_(mapped_bytes),
      page_bytes_(page_bytes),
      total_pages_(total_pages) {
  free_.reserve(static_cast<size_t>(total_pages));
  for (int64_t i = total_pages - 1; i >= 0; --i) {
    free_.push_back(static_cast<int32_t>(i));
  }
}

KvBlockPool::~KvBlockPool() { munmap(base_, mapped_bytes_); }

bool KvBlockPool::Allocate(int64_t n, std::vector<int32_t>* out) {
  if (n < 0 || n > free_pages()) return false;
  for (int64_t i = 0; i < n; ++i) {
    out->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockPool::Release(absl::Span<const int32_t> pages) {
  const int64_t half = page_bytes_ / 2;
  for (int32_t page : pages) {
    DiscardFrames(k_half() + page * half, half);
    DiscardFrames(v_half() + page * half, half);
  }
  free_.insert(free_.end(), pages.begin(), pages.end());
}

absl::StatusOr<KvPoolView> KvBlockPool::ViewFor(const Model& model) const {
  const int64_t block = BlockBytes(model);
  if (page_bytes_ % block != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", model.name, "' version ", model.version, " needs ", block,
        "-byte KV blocks, which do not divide the cache's ", page_bytes_,
        "-byte pages (sized for the models served at start-up); restart the "
        "server to serve sessions of this model"));
  }
  KvPoolView view;
  view.k_base = k_half();
  view.v_base = v_half();
  view.blocks_per_page = page_bytes_ / block;
  view.num_blocks = total_pages_ * view.blocks_per_page;
  view.block_tokens = kBlockTokens;
  view.num_kv_heads = model.attention.num_kv_heads;
  view.head_dim = model.attention.head_dim;
  view.bf16 = ElementBytes(model) == 2;
  return view;
}

}  // namespace attn::server
