#include "client/loadgen/arrival_schedule.h"

#include <cmath>

namespace attn::loadgen {

ArrivalSchedule::ArrivalSchedule(Arrival arrival, double rate_per_second,
                                 uint64_t seed)
    : arrival_(arrival),
      gap_ns_(1e9 / rate_per_second),
      rng_(seed),
      exp_(1.0) {}

int64_t ArrivalSchedule::Next() {
  const int64_t i = index_++;
  if (arrival_ == Arrival::kConstant) {
    // Computed from the index (not accumulated) so there is no drift.
    return std::llround(static_cast<double>(i) * gap_ns_);
  }
  if (i == 0) return 0;
  poisson_t_ += exp_(rng_) * gap_ns_;
  return std::llround(poisson_t_);
}

}  // namespace attn::loadgen
