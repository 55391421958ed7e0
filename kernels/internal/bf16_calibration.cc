#include "kernels/internal/bf16_calibration.h"

#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "kernels/internal/flash_core.h"

namespace attn::kernels::internal {
namespace {

constexpr int64_t kLengths[] = {16, 32, 64, 128, 256, 512};
constexpr int64_t kTokensPerPoint = 512;
constexpr int kReps = 3;

// n sequences of `len` queries and keys (self-attention, no mask), random
// inputs in [-1, 1].
struct Batch {
  std::vector<float> q, k, v, ctx;
  std::vector<uint8_t> row_masked;
  std::vector<FlashSequence> seqs;
};

Batch MakeBatch(int64_t heads, int64_t kv_heads, int64_t hd, int64_t len,
                int64_t n) {
  Batch b;
  const int64_t tokens = len * n;
  std::mt19937 rng(static_cast<uint32_t>(len));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  b.q.resize(tokens * heads * hd);
  b.k.resize(tokens * kv_heads * hd);
  b.v.resize(b.k.size());
  b.ctx.resize(b.q.size());
  b.row_masked.resize(tokens);
  for (float& x : b.q) x = u(rng) * 0.125f;
  for (float& x : b.k) x = u(rng);
  for (float& x : b.v) x = u(rng);
  for (int64_t i = 0; i < n; ++i) {
    FlashSequence s;
    s.q = b.q.data() + i * len * heads * hd;
    s.k = b.k.data() + i * len * kv_heads * hd;
    s.v = b.v.data() + i * len * kv_heads * hd;
    s.q_stride = heads * hd;
    s.kv_stride = kv_heads * hd;
    s.context = b.ctx.data() + i * len * heads * hd;
    s.q_len = len;
    s.kv_len = len;
    s.key_limit = len;
    s.row_masked = b.row_masked.data() + i * len;
    b.seqs.push_back(s);
  }
  return b;
}

// CPU time of the calling thread (the whole team: Measure runs a team of
// one), so that other processes' load does not enter the comparison.
double ThreadSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) +
         1e-9 * static_cast<double>(ts.tv_nsec);
}

double Seconds(const FlashCore& core, const Batch& b) {
  const double t0 = ThreadSeconds();
  (void)core.Forward(b.seqs);
  return ThreadSeconds() - t0;
}

Bf16Calibration Measure(int64_t heads, int64_t kv_heads, int64_t hd) {
  const auto start = std::chrono::steady_clock::now();
  CoreChoice f32;
  f32.isa = CoreIsa::kAvx512;
  f32.name = "avx512";
  CoreChoice vdp;
  vdp.isa = CoreIsa::kAvx512Bf16;
  vdp.name = "avx512_bf16";
  const FlashCore f32_core(heads, kv_heads, hd, ComputeDType::kBFloat16, f32);
  const FlashCore vdp_core(heads, kv_heads, hd, ComputeDType::kBFloat16, vdp);
  Bf16Calibration c;
  // One thread: a unit's speed does not depend on the team, and a team of
  // one is timed exactly by its thread's CPU time.
  const int team = omp_get_max_threads();
  omp_set_num_threads(1);
  int wins_in_a_row = 0;
  for (int64_t len : kLengths) {
    const Batch b = MakeBatch(heads, kv_heads, hd, len,
                              std::max<int64_t>(1, kTokensPerPoint / len));
    Seconds(f32_core, b);  // first calls: scratch, caches
    Seconds(vdp_core, b);
    double t_f32 = 1e30;
    double t_vdp = 1e30;
    for (int r = 0; r < kReps; ++r) {  // interleaved: both see the same noise
      t_f32 = std::min(t_f32, Seconds(f32_core, b));
      t_vdp = std::min(t_vdp, Seconds(vdp_core, b));
    }
    c.ratios.emplace_back(len, t_vdp / t_f32);
    wins_in_a_row = t_vdp < t_f32 ? wins_in_a_row + 1 : 0;
    if (wins_in_a_row == 2) break;
  }
  omp_set_num_threads(team);
  c.min_keys = Bf16MinKeysFrom(c.ratios);
  c.millis = std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - start)
                 .count();
  return c;
}

// (heads, kv heads, head_dim) -> its calibration, for the process's life.
using Key = std::tuple<int64_t, int64_t, int64_t>;
struct Cache {
  absl::Mutex mu;
  std::map<Key, Bf16Calibration> done ABSL_GUARDED_BY(mu);
};

Cache& TheCache() {
  static Cache* cache = new Cache;
  return *cache;
}

}  // namespace

std::string Bf16Calibration::Summary() const {
  std::string s = "vdpbf16ps/fp32 time";
  for (const auto& [len, ratio] : ratios) {
    absl::StrAppend(&s, absl::StrFormat(" %.2f@%d", ratio, len));
  }
  absl::StrAppend(&s, absl::StrFormat(" (%.0f ms)", millis));
  return s;
}

int64_t Bf16MinKeysFrom(const std::vector<std::pair<int64_t, double>>& ratios) {
  int64_t min_keys = kBf16Never;
  for (auto it = ratios.rbegin(); it != ratios.rend() && it->second < 1.0;
       ++it) {
    min_keys = it->first;
  }
  // Winning from the shortest length measured: every length wins.
  if (!ratios.empty() && min_keys == ratios.front().first) return 0;
  return min_keys;
}

Bf16Calibration CalibrateBf16(int64_t num_heads, int64_t num_kv_heads,
                              int64_t head_dim) {
  Cache& cache = TheCache();
  const Key key{num_heads, num_kv_heads, head_dim};
  absl::MutexLock lock(&cache.mu);
  auto it = cache.done.find(key);
  if (it == cache.done.end()) {
    it = cache.done.emplace(key, Measure(num_heads, num_kv_heads, head_dim))
             .first;
  }
  return it->second;
}

}  // namespace attn::kernels::internal
