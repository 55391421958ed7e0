// ArrivalSchedule: constant spacing and the Poisson process's mean gap and
// coefficient of variation; deterministic for a seed.
#include "client/loadgen/arrival_schedule.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace attn::loadgen {
namespace {

TEST(ArrivalScheduleTest, ConstantIsEvenlySpacedWithoutDrift) {
  ArrivalSchedule s(Arrival::kConstant, 300.0, 1);
  int64_t prev = s.Next();
  EXPECT_EQ(prev, 0);
  for (int i = 1; i <= 30'000; ++i) {
    const int64_t t = s.Next();
    EXPECT_NEAR(static_cast<double>(t - prev), 1e9 / 300, 1.0) << i;
    prev = t;
  }
  // Exactly 30000 / 300 = 100 s after the start: no accumulated error.
  EXPECT_NEAR(static_cast<double>(prev), 100e9, 1.0);
}

TEST(ArrivalScheduleTest, PoissonGapsHaveTheRightMeanAndSpread) {
  constexpr double kRate = 200.0;
  constexpr int kN = 100'000;
  ArrivalSchedule s(Arrival::kPoisson, kRate, 42);
  std::vector<double> gaps;
  int64_t prev = s.Next();
  for (int i = 0; i < kN; ++i) {
    const int64_t t = s.Next();
    ASSERT_GE(t, prev);
    gaps.push_back(static_cast<double>(t - prev));
    prev = t;
  }
  double mean = 0;
  for (double g : gaps) mean += g;
  mean /= kN;
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  var /= kN - 1;
  const double expected = 1e9 / kRate;
  // Standard error of the mean: expected / sqrt(kN) = 0.32%: allow 5 of it.
  EXPECT_NEAR(mean, expected, 0.016 * expected);
  // Exponential gaps: standard deviation == mean.
  EXPECT_NEAR(std::sqrt(var) / mean, 1.0, 0.03);
}

TEST(ArrivalScheduleTest, SameSeedSameSchedule) {
  ArrivalSchedule a(Arrival::kPoisson, 1000.0, 5);
  ArrivalSchedule b(Arrival::kPoisson, 1000.0, 5);
  ArrivalSchedule c(Arrival::kPoisson, 1000.0, 6);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const int64_t ta = a.Next();
    EXPECT_EQ(ta, b.Next());
    differs |= ta != c.Next();
  }
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace attn::loadgen
