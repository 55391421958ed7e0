// Helpers shared by the oneDNN-based kernels: error conversion and per-call
// scratchpad allocation. Internal: not part of the public API.
//
// Thread-safety: all functions are stateless and thread-safe.
#ifndef ATTNSERVE_KERNELS_INTERNAL_DNNL_UTIL_H_
#define ATTNSERVE_KERNELS_INTERNAL_DNNL_UTIL_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "oneapi/dnnl/dnnl.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace attn::kernels::internal {

// Converts a oneDNN exception into a status: UNIMPLEMENTED when oneDNN has
// no implementation for the requested shapes/types, INTERNAL otherwise.
// `what` names the operation (e.g. "creating the Q projection").
inline absl::Status DnnlErrorToStatus(const dnnl::error& e,
                                      absl::string_view what) {
  const std::string message =
      absl::StrCat("oneDNN failed while ", what, ": ", e.what());
  if (e.status == dnnl_unimplemented) return absl::UnimplementedError(message);
  return absl::InternalError(message);
}

// Runs `fn` (returning absl::Status) and converts oneDNN exceptions and
// std::bad_alloc into statuses.
template <typename Fn>
absl::Status CallDnnl(absl::string_view what, Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const dnnl::error& e) {
    return DnnlErrorToStatus(e, what);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory while ", what));
  }
}

// Primitive attributes used by every primitive of this library: user-managed
// scratchpad, so that concurrent executions never share oneDNN's global one.
inline dnnl::primitive_attr UserScratchpadAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// OpenMP threads a call made now on this thread runs with
// (omp_get_max_threads(): the caller's omp_set_num_threads). oneDNN fixes a
// primitive's thread count when it is created, so every primitive cache is
// keyed by this count too: a caller may change it from one call to the next
// (the server runs small calls on one thread, large ones on the team).
inline int CallerThreads() {
#ifdef _OPENMP
  const int threads = omp_get_max_threads();
  return threads > 1 ? threads : 1;
#else
  return 1;
#endif
}

// Returns a memory object for `md` over a borrowed pointer (oneDNN takes
// void*; inputs are never written).
inline dnnl::memory Borrow(const dnnl::memory::desc& md,
                           const dnnl::engine& engine, const void* data) {
  return dnnl::memory(md, engine, const_cast<void*>(data));
}

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_DNNL_UTIL_H_
