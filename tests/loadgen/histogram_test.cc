// LatencyHistogram: the <= 1% relative error bound of every quantile
// against exact percentiles of random samples, and exact min/max/mean.
#include "client/loadgen/histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace attn::loadgen {
namespace {

// The exact value at quantile q: the ceil(q * n)-th smallest sample.
int64_t ExactQuantile(std::vector<int64_t> sorted, double q) {
  const size_t rank = std::max<size_t>(
      1,
      static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size()))));
  return sorted[rank - 1];
}

void ExpectWithinOnePercent(const std::vector<int64_t>& samples) {
  LatencyHistogram h;
  double sum = 0;
  for (int64_t v : samples) {
    h.Record(v);
    sum += static_cast<double>(v);
  }
  std::vector<int64_t> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  for (double q : {0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999,
                   0.9999, 1.0}) {
    const double exact = static_cast<double>(ExactQuantile(sorted, q));
    const double got = static_cast<double>(h.Quantile(q));
    EXPECT_LE(std::fabs(got - exact), 0.01 * exact)
        << "q=" << q << " exact=" << exact << " got=" << got;
  }
  EXPECT_EQ(h.count(), static_cast<int64_t>(samples.size()));
  EXPECT_EQ(h.min(), sorted.front());
  EXPECT_EQ(h.max(), sorted.back());
  EXPECT_NEAR(h.mean(), sum / samples.size(), 1e-9 * sum / samples.size());
}

TEST(HistogramTest, LogNormalLatenciesWithinOnePercent) {
  std::mt19937_64 rng(7);
  // ns latencies from ~10 us to ~1 s with a long tail.
  std::lognormal_distribution<double> dist(std::log(500'000.0), 1.5);
  std::vector<int64_t> samples;
  for (int i = 0; i < 200'000; ++i) {
    samples.push_back(static_cast<int64_t>(dist(rng)) + 1);
  }
  ExpectWithinOnePercent(samples);
}

TEST(HistogramTest, UniformOverManyDecadesWithinOnePercent) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> exponent(0.0, 12.0);
  std::vector<int64_t> samples;
  for (int i = 0; i < 100'000; ++i) {
    samples.push_back(static_cast<int64_t>(std::pow(10.0, exponent(rng))) + 1);
  }
  ExpectWithinOnePercent(samples);
}

TEST(HistogramTest, EveryBucketBoundIsWithinHalfAPercent) {
  // The worst case of one value: anywhere in a bucket, reported as its
  // midpoint, with min/max clamping disabled by a wide spread.
  for (int64_t v : {int64_t{127}, int64_t{128}, int64_t{129}, int64_t{255},
                    int64_t{256}, int64_t{1000}, int64_t{123456789},
                    int64_t{1} << 40, (int64_t{1} << 41) - 1}) {
    const int i = LatencyHistogram::IndexOf(v);
    EXPECT_LE(LatencyHistogram::LowerBound(i), v);
    EXPECT_LT(v, LatencyHistogram::LowerBound(i) + LatencyHistogram::Width(i));
    const double mid = static_cast<double>(LatencyHistogram::LowerBound(i)) +
                       static_cast<double>(LatencyHistogram::Width(i) / 2);
    EXPECT_LE(std::fabs(mid - static_cast<double>(v)),
              0.005 * static_cast<double>(v))
        << v;
  }
}

TEST(HistogramTest, SmallValuesAreExactAndMergeAddsCounts) {
  LatencyHistogram a, b;
  for (int v = 0; v < 100; ++v) a.Record(v);
  for (int v = 100; v < 200; ++v) b.Record(v);
  a.Merge(b);
  EXPECT_EQ(a.count(), 200);
  EXPECT_EQ(a.min(), 0);
  EXPECT_EQ(a.max(), 199);
  EXPECT_EQ(a.Quantile(0.5), 99);  // the 100th smallest value
  int64_t total = 0;
  for (const auto& bucket : a.Buckets()) total += bucket.count;
  EXPECT_EQ(total, 200);
}

TEST(HistogramTest, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.Quantile(0.99), 0);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.max(), 0);
  EXPECT_EQ(h.mean(), 0);
}

}  // namespace
}  // namespace attn::loadgen
