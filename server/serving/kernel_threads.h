// How many OpenMP threads one kernel call gets: a call too small to gain
// from a team runs on the executor thread alone, a larger one on up to the
// server's --threads. The executor (server/serving/batcher.h) and the
// warm-up (server/serving/warmup.h) both ask here, so that the primitives
// warm-up creates are the ones the executor later runs (the kernels cache
// primitives per shape and thread count).
//
//   int threads = KernelThreadsFor(BatchFlops(*model, jobs), /*budget=*/2);
//
// Why: each OpenMP fork/join costs a few microseconds with the team
// spinning, and tens to hundreds when the team must be woken (after the
// server was idle) or when one of its threads is preempted (the cores are
// shared with gRPC's threads); a small call has several such joins (QKV
// GEMM, attention core, output GEMM). Measured on 2 cores (README,
// "Serving-path tax"): a 16-token d_model 256 call (8.7 MFLOP) computes
// faster alone than on a 2-thread team, while a team halves the time of
// calls of a few hundred MFLOP. A call therefore gets one thread per
// kMinFlopsPerThread of work, at least one and at most the budget.
//
// Thread-safety: pure functions, callable from any thread.
#ifndef ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_
#define ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/attention.h"

namespace attn::server {

// Work one more thread must get before a call is split over it: about 1 ms
// of one AVX2 core's GEMM (0.5 ms on AVX-512), long against a join.
inline constexpr int64_t kMinFlopsPerThread = 50'000'000;

// Floating-point operations of one attention call of `batch` sequences,
// `q_len` queries and `kv_len` keys each, on a layer of `config` (resolved:
// no zero defaults): the four projections (K and V over the keys) and
// Q·Kᵀ, P·V over the visible (query, key) pairs (about half when causal).
int64_t AttentionFlops(const kernels::AttentionConfig& config, int64_t batch,
                       int64_t q_len, int64_t kv_len, bool causal);

// Threads for a call of `flops` operations: flops / kMinFlopsPerThread,
// clamped to [1, budget]. REQUIRES: budget >= 1.
int KernelThreadsFor(int64_t flops, int budget);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_
