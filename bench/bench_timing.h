// Timing helpers shared by attn_bench's kernel and decode cases.
// Thread-safety: functions only; call from one thread.
#ifndef ATTNSERVE_BENCH_BENCH_TIMING_H_
#define ATTNSERVE_BENCH_BENCH_TIMING_H_

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace attn::bench {

inline double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Median seconds per call of each function, timed in alternating rounds:
// each round runs, for every function in turn, one untimed warm-up call,
// then times it for min_time / kRounds seconds (at least one call). Each
// function runs with warm caches, and slow drifts of the machine (other
// tenants, clock frequency) shift all medians alike, so they cancel in the
// ratios.
inline std::vector<double> TimeMediansInterleaved(
    const std::vector<std::function<void()>>& fns, double min_time) {
  constexpr int kRounds = 5;
  std::vector<std::vector<double>> times(fns.size());
  for (int r = 0; r < kRounds; ++r) {
    for (size_t f = 0; f < fns.size(); ++f) {
      fns[f]();
      const auto start = std::chrono::steady_clock::now();
      do {
        const auto t0 = std::chrono::steady_clock::now();
        fns[f]();
        times[f].push_back(Seconds(std::chrono::steady_clock::now() - t0));
      } while (Seconds(std::chrono::steady_clock::now() - start) <
                   min_time / kRounds &&
               times[f].size() < 1000);
    }
  }
  std::vector<double> medians;
  for (std::vector<double>& t : times) {
    std::sort(t.begin(), t.end());
    medians.push_back(t[t.size() / 2]);
  }
  return medians;
}

}  // namespace attn::bench

#endif  // ATTNSERVE_BENCH_BENCH_TIMING_H_
