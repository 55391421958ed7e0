// How many OpenMP threads one kernel call gets. A call too small to gain
// from a team runs on the executor thread alone; a large one on the whole
// team (the server's --threads). In between, which is faster depends on the
// CPU, the kernel path (AVX-512 or AVX2 units, fp32 or bf16) and what else
// runs on the cores, so the executor measures it: per size of call it times
// both choices and keeps the faster (KernelThreadChooser). The warm-up
// (server/serving/warmup.h) runs each warm-up shape with every candidate
// count, so that the primitives the executor may use exist (the kernels
// cache primitives per shape and thread count).
//
//   KernelThreadChooser chooser(/*budget=*/2);
//   const int64_t flops = AttentionFlops(config, 1, 16, 16, false);
//   const int threads = chooser.Choose(flops);
//   omp_set_num_threads(threads);  ... kernel call taking `compute` ...
//   chooser.Record(flops, threads, compute);
//
// Why: each OpenMP fork/join costs a few microseconds with the team
// spinning, and tens to hundreds when the team must be woken (after the
// server was idle) or one of its threads is preempted (the cores are shared
// with gRPC's threads); a call has several joins (QKV GEMM, attention core,
// output GEMM). Measured on an AVX-512 CPU, a 16-token d_model 256 call
// computed ~3x faster alone than on a 2-thread team; on AVX2 (scalar
// attention core) the team won by ~1.3x. No fixed threshold is right for
// both.
//
// Thread-safety: AttentionFlops and CandidateThreads are pure.
// KernelThreadChooser is not thread-safe: one owner (the executor thread).
#ifndef ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_
#define ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include "absl/time/time.h"
#include "kernels/attention.h"

namespace attn::server {

// Calls of at least this many FLOPs always run on the whole team (tens of
// milliseconds of one core: a join is noise there, and timing them alone
// would cost too much).
inline constexpr int64_t kTeamAlwaysFlops = 1'000'000'000;

// Floating-point operations of one attention call of `batch` sequences,
// `q_len` queries and `kv_len` keys each, on a layer of `config` (resolved:
// no zero defaults): the four projections (K and V over the keys) and
// Q·Kᵀ, P·V over the visible (query, key) pairs (about half when causal).
int64_t AttentionFlops(const kernels::AttentionConfig& config, int64_t batch,
                       int64_t q_len, int64_t kv_len, bool causal);

// Thread counts a call of `flops` may run with: {budget} from
// kTeamAlwaysFlops up or when budget is 1, else {1, budget}.
// REQUIRES: budget >= 1.
std::vector<int> CandidateThreads(int64_t flops, int budget);

class KernelThreadChooser {
 public:
  // Each candidate is timed this many times per size before the faster is
  // kept; then every kExploreEvery-th call of a size runs the other one, so
  // that a change (load, another model) is noticed.
  static constexpr int kMinSamples = 3;
  static constexpr int kExploreEvery = 32;
  // Durations kept per size and candidate (the median of these decides).
  static constexpr int kWindow = 9;

  // REQUIRES: budget >= 1 (the executor's team, --threads).
  explicit KernelThreadChooser(int budget);

  // The thread count for a call of `flops`, one of CandidateThreads().
  int Choose(int64_t flops);
  // Reports that a call of `flops` took `compute` on `threads` threads.
  // Counts that are not candidates for its size are ignored.
  void Record(int64_t flops, int threads, absl::Duration compute);

  int budget() const { return budget_; }

 private:
  // Calls of one size class (FLOPs within a factor of 2).
  struct Size {
    // Per candidate (0: one thread, 1: the team): nanoseconds per FLOP of
    // the last kWindow calls, as a ring.
    std::array<std::vector<double>, 2> cost;
    std::array<size_t, 2> next = {0, 0};
    int64_t calls = 0;
  };
  static int SizeClass(int64_t flops);

  const int budget_;
  std::map<int, Size> sizes_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_KERNEL_THREADS_H_
