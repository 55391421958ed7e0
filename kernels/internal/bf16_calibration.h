// Where the vdpbf16ps unit beats the fp32 unit in a bf16 layer's flash core
// on this CPU, measured rather than assumed: the two are timed, interleaved,
// on synthetic sequences of the layer's own head shape at key lengths 16,
// 32, ..., 512 (512 tokens a point, the fastest of three calls each), on
// one thread and in that thread's CPU time, so that other processes on the
// machine do not decide it. The smallest length from which vdpbf16ps wins
// at every length measured is the layer's bf16_min_keys (kernel_isa.h); the
// ladder stops after two consecutive wins. Costs tens to a few hundred ms
// of one core, once per head shape per process (kept for its life).
// Internal.
//
// Thread-safety: CalibrateBf16 is thread-safe; concurrent callers of one
// shape wait for a single measurement (one mutex over the cache, so shapes
// are measured one at a time and never time each other). It sets the
// calling thread's OpenMP thread count to 1 while it measures and restores
// it.
#ifndef ATTNSERVE_KERNELS_INTERNAL_BF16_CALIBRATION_H_
#define ATTNSERVE_KERNELS_INTERNAL_BF16_CALIBRATION_H_

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace attn::kernels::internal {

// bf16_min_keys when the fp32 unit wins at the longest length measured.
inline constexpr int64_t kBf16Never = std::numeric_limits<int64_t>::max();

struct Bf16Calibration {
  int64_t min_keys = kBf16Never;
  // (key length, vdpbf16ps time / fp32 time) per length measured, ascending.
  std::vector<std::pair<int64_t, double>> ratios;
  double millis = 0;  // wall time of the measurement
  // "vdpbf16ps/fp32 time 1.21@16 ... 0.74@256 (48 ms)"
  std::string Summary() const;
};

// The calibration of a bf16 layer with these heads. REQUIRES: all > 0,
// num_heads % num_kv_heads
// == 0, and a CPU that runs the vdpbf16ps unit (AVX512-BF16).
Bf16Calibration CalibrateBf16(int64_t num_heads, int64_t num_kv_heads,
                              int64_t head_dim);

// From measured (length, ratio) points, ascending: the smallest length
// from which every ratio is below 1, or kBf16Never. Exposed for tests.
int64_t Bf16MinKeysFrom(const std::vector<std::pair<int64_t, double>>& ratios);

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_BF16_CALIBRATION_H_
