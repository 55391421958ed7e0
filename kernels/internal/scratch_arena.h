// Reusable scratch memory for the hot path: a grow-only aligned buffer
// (ScratchArena), a pool of them (ScratchPool) so that concurrent calls never
// share one, and a bump layout (ScratchLayout) that carves one arena into
// aligned sub-buffers. In steady state (shapes seen before) a call allocates
// nothing: it leases an arena that is already large enough.
// Internal: not part of the public API.
//
// Thread-safety: ScratchPool is internally synchronized; an arena is used by
// one lease holder at a time. ScratchLayout is a plain value.
#ifndef ATTNSERVE_KERNELS_INTERNAL_SCRATCH_ARENA_H_
#define ATTNSERVE_KERNELS_INTERNAL_SCRATCH_ARENA_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attn::kernels::internal {

// Alignment of arenas and of every ScratchLayout slot (one cache line, and
// enough for 512-bit vector loads).
inline constexpr size_t kScratchAlign = 64;

// Arenas of at least this many bytes are backed by huge pages when the
// kernel allows it (transparent_hugepage = madvise or always).
inline constexpr size_t kHugePage = size_t{2} << 20;
inline constexpr size_t kHugeArenaBytes = size_t{4} << 20;

// A grow-only buffer. Contents are undefined after Reserve() grows it.
class ScratchArena {
 public:
  ScratchArena() = default;
  ScratchArena(const ScratchArena&) = delete;
  ScratchArena& operator=(const ScratchArena&) = delete;
  ~ScratchArena() { std::free(data_); }

  // Returns a buffer of at least `bytes` bytes, aligned to kScratchAlign.
  // Throws std::bad_alloc when memory is exhausted.
  void* Reserve(size_t bytes) {
    if (bytes <= capacity_) return data_;
    std::free(data_);
    data_ = nullptr;
    capacity_ = 0;
    // Large arenas sit on 2 MiB boundaries and ask for transparent huge
    // pages: the attention core and the GEMMs stride through them, and 4 KiB
    // pages would cost a TLB miss on most rows.
    const size_t align = bytes >= kHugeArenaBytes ? kHugePage : kScratchAlign;
    const size_t rounded = (bytes + align - 1) / align * align;
    data_ = std::aligned_alloc(align, rounded);
    if (data_ == nullptr) throw std::bad_alloc();
    if (align == kHugePage) madvise(data_, rounded, MADV_HUGEPAGE);
    capacity_ = rounded;
    return data_;
  }

  size_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// A pool of arenas. Acquire() hands out an idle arena (or a new one); the
// lease returns it on destruction. The pool keeps every arena it created
// (as many as the peak number of concurrent callers).
class ScratchPool {
 public:
  class Lease {
   public:
    Lease(ScratchPool* pool, std::unique_ptr<ScratchArena> arena)
        : pool_(pool), arena_(std::move(arena)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (arena_ != nullptr) pool_->Release(std::move(arena_));
    }
    ScratchArena* operator->() const { return arena_.get(); }
    ScratchArena& operator*() const { return *arena_; }

   private:
    ScratchPool* pool_;
    std::unique_ptr<ScratchArena> arena_;
  };

  Lease Acquire() {
    absl::MutexLock l(&mu_);
    if (idle_.empty()) return Lease(this, std::make_unique<ScratchArena>());
    std::unique_ptr<ScratchArena> arena = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(arena));
  }

 private:
  void Release(std::unique_ptr<ScratchArena> arena) {
    absl::MutexLock l(&mu_);
    idle_.push_back(std::move(arena));
  }

  absl::Mutex mu_;
  std::vector<std::unique_ptr<ScratchArena>> idle_ ABSL_GUARDED_BY(mu_);
};

// Offsets of aligned sub-buffers within one arena:
//   ScratchLayout layout;
//   const size_t a = layout.Add<float>(n), b = layout.Add<uint8_t>(m);
//   char* base = static_cast<char*>(arena.Reserve(layout.bytes()));
//   float* fa = layout.At<float>(base, a);
class ScratchLayout {
 public:
  // Reserves `count` elements of T; returns the slot's offset.
  template <typename T>
  size_t Add(int64_t count) {
    const size_t offset = bytes_;
    const size_t size = static_cast<size_t>(count) * sizeof(T);
    bytes_ += (size + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
    return offset;
  }
  size_t bytes() const { return bytes_; }
  template <typename T>
  static T* At(void* base, size_t offset) {
    return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
  }

 private:
  size_t bytes_ = 0;
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_SCRATCH_ARENA_H_
