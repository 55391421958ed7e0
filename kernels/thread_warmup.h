// Warm-up of the calling thread for attention calls: runs a tiny attention
// layer (with softmax weights returned) twice on this thread, so that the
// thread's own first-use costs in oneDNN and OpenMP are paid here rather than
// by the first real request it computes.
//
//   absl::Status s = attn::kernels::WarmUpCallingThread();
//
// Why: a model warmed up on one thread (server/serving/warmup.h) still cost
// 3-4x its steady state on the first call made from a different thread
// (measured on AMD EPYC Zen 3: ~190 us against ~55 us for d_model 64, seq
// 16); after a pass of any small layer on that thread it cost ~1.5x. The
// state is per thread, not per model or shape: one pass covers them all.
//
// Thread-safety: thread-safe; it touches only the calling thread's state
// and a layer of its own. Takes well under a millisecond after the process's
// first call.
#ifndef ATTNSERVE_KERNELS_THREAD_WARMUP_H_
#define ATTNSERVE_KERNELS_THREAD_WARMUP_H_

#include "absl/status/status.h"

namespace attn::kernels {

// Errors: INTERNAL if oneDNN fails (nothing is left changed but the
// calling thread's caches).
absl::Status WarmUpCallingThread();

}  // namespace attn::kernels

#endif  // ATTNSERVE_KERNELS_THREAD_WARMUP_H_
