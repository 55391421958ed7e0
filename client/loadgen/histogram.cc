#include "client/loadgen/histogram.h"

#include <algorithm>
#include <cmath>

namespace attn::loadgen {
namespace {

constexpr int kSub = 1 << LatencyHistogram::kSubBucketBits;
// Exact buckets [0, kSub), then kSub sub-buckets for each exponent
// kSubBucketBits..62.
constexpr int kNumBuckets =
    kSub + (63 - LatencyHistogram::kSubBucketBits) * kSub;

int HighestBit(uint64_t v) { return 63 - __builtin_clzll(v); }

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(kNumBuckets, 0) {}

int LatencyHistogram::IndexOf(int64_t value) {
  if (value < kSub) return value < 0 ? 0 : static_cast<int>(value);
  const int exponent = HighestBit(static_cast<uint64_t>(value));
  const int shift = exponent - kSubBucketBits;
  const int sub = static_cast<int>((value >> shift) - kSub);
  return kSub + shift * kSub + sub;
}

int64_t LatencyHistogram::LowerBound(int index) {
  if (index < kSub) return index;
  const int shift = (index - kSub) / kSub;
  const int sub = (index - kSub) % kSub;
  return static_cast<int64_t>(kSub + sub) << shift;
}

int64_t LatencyHistogram::Width(int index) {
  if (index < kSub) return 1;
  return int64_t{1} << ((index - kSub) / kSub);
}

void LatencyHistogram::Record(int64_t value) {
  value = std::max<int64_t>(value, 0);
  ++counts_[IndexOf(value)];
  if (count_ == 0 || value < min_) min_ = value;
  if (value > max_) max_ = value;
  ++count_;
  sum_ += static_cast<double>(value);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (int i = 0; i < kNumBuckets; ++i) counts_[i] += other.counts_[i];
  if (count_ == 0 || other.min_ < min_) min_ = other.min_;
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::Clear() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  min_ = max_ = 0;
  sum_ = 0;
}

double LatencyHistogram::mean() const {
  return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
}

int64_t LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const int64_t rank = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(q * static_cast<double>(count_))));
  if (rank == 1) return min_;
  if (rank == count_) return max_;
  int64_t seen = 0;
  for (int i = 0; i < kNumBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      const int64_t mid = LowerBound(i) + Width(i) / 2;
      return std::clamp(mid, min_, max_);
    }
  }
  return max_;
}

std::vector<LatencyHistogram::Bucket> LatencyHistogram::Buckets() const {
  std::vector<Bucket> out;
  for (int i = 0; i < kNumBuckets; ++i) {
    if (counts_[i] != 0) {
      out.push_back({LowerBound(i), LowerBound(i) + Width(i), counts_[i]});
    }
  }
  return out;
}

}  // namespace attn::loadgen
