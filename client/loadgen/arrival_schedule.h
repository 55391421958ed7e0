// ArrivalSchedule: the intended send times of an open-loop run, fixed in
// advance and independent of the server's responses (as in wrk2), so that a
// stalled server cannot slow the offered load down.
//
//   kConstant  request i at i / rate
//   kPoisson   exponential gaps of mean 1 / rate (a Poisson process)
//
// Usage:
//   ArrivalSchedule s(Arrival::kPoisson, 200.0, /*seed=*/1);
//   int64_t t0 = s.Next();  // ns after the start of the run: 0, ...
//
// Deterministic for a seed. Not thread-safe (one scheduler thread owns it).
#ifndef ATTNSERVE_CLIENT_LOADGEN_ARRIVAL_SCHEDULE_H_
#define ATTNSERVE_CLIENT_LOADGEN_ARRIVAL_SCHEDULE_H_

#include <cstdint>
#include <random>

namespace attn::loadgen {

enum class Arrival { kConstant, kPoisson };

class ArrivalSchedule {
 public:
  // REQUIRES: rate_per_second > 0.
  ArrivalSchedule(Arrival arrival, double rate_per_second, uint64_t seed);

  // Offset of the next intended send from the start of the run, ns; the
  // first is 0; non-decreasing.
  int64_t Next();

 private:
  Arrival arrival_;
  double gap_ns_;
  std::mt19937_64 rng_;
  std::exponential_distribution<double> exp_;
  int64_t index_ = 0;
  double poisson_t_ = 0;
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_ARRIVAL_SCHEDULE_H_
