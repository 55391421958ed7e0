// A small thread-safe map from a shape key to immutable, shared oneDNN
// primitives. Internal: not part of the public API.
//
// Thread-safety: all methods may be called concurrently. Values are
// immutable once inserted and handed out as shared_ptr, so a caller keeps
// using its value even if the cache is cleared meanwhile.
#ifndef ATTNSERVE_KERNELS_INTERNAL_PRIMITIVE_CACHE_H_
#define ATTNSERVE_KERNELS_INTERNAL_PRIMITIVE_CACHE_H_

#include <cstddef>
#include <map>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace attn::kernels::internal {

template <typename Key, typename Value>
class PrimitiveCache {
 public:
  // `capacity`: when an insertion would exceed it, the cache is emptied
  // first (shapes are few in practice; the server pads nothing, so token
  // counts vary, and this bounds memory). REQUIRES: capacity > 0.
  explicit PrimitiveCache(size_t capacity = 512) : capacity_(capacity) {}

  // Returns the value for `key`, calling `create()` (which returns
  // absl::StatusOr<Value>) outside the lock on a miss. If two threads miss
  // at once, both create and the first insertion wins.
  template <typename CreateFn>
  absl::StatusOr<std::shared_ptr<const Value>> GetOrCreate(const Key& key,
                                                           CreateFn&& create) {
    {
      absl::MutexLock l(&mu_);
      auto it = map_.find(key);
      if (it != map_.end()) return it->second;
    }
    absl::StatusOr<Value> created = std::forward<CreateFn>(create)();
    if (!created.ok()) return created.status();
    auto value = std::make_shared<const Value>(*std::move(created));
    absl::MutexLock l(&mu_);
    if (map_.size() >= capacity_ && map_.find(key) == map_.end()) map_.clear();
    return map_.emplace(key, std::move(value)).first->second;
  }

  size_t size() const {
    absl::MutexLock l(&mu_);
    return map_.size();
  }

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::map<Key, std::shared_ptr<const Value>> map_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_PRIMITIVE_CACHE_H_
