// LatencyHistogram: an HDR-style log-bucketed histogram of non-negative
// integer values (attn_loadgen records nanoseconds).
//
// Values below 2^kSubBucketBits are counted exactly; above, every power of
// two is split into 2^kSubBucketBits linear sub-buckets, and a quantile is
// reported as the midpoint of its bucket, clamped to the exact min and max.
// The relative error of any reported quantile is therefore at most
// 2^-(kSubBucketBits + 1) = 0.39% (the issue asks for <= 1%). min, max,
// count and mean are exact.
//
// Usage:
//   LatencyHistogram h;
//   h.Record(1234);
//   int64_t p99 = h.Quantile(0.99);
//
// Memory: about 60 KiB (fixed). Not thread-safe: callers synchronize.
#ifndef ATTNSERVE_CLIENT_LOADGEN_HISTOGRAM_H_
#define ATTNSERVE_CLIENT_LOADGEN_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace attn::loadgen {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;

  LatencyHistogram();

  // Counts one value; negative values count as 0.
  void Record(int64_t value);
  // Adds every count of `other`.
  void Merge(const LatencyHistogram& other);
  void Clear();

  int64_t count() const { return count_; }
  // 0 when empty.
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const;

  // The value at quantile q in [0, 1]: the smallest recorded value v such
  // that at least ceil(q * count) values are <= v, within the error bound
  // above. 0 when empty.
  int64_t Quantile(double q) const;

  // One non-empty bucket: values in [lower, upper).
  struct Bucket {
    int64_t lower;
    int64_t upper;
    int64_t count;
  };
  // Non-empty buckets in increasing order.
  std::vector<Bucket> Buckets() const;

  // Bucket arithmetic, exposed for tests.
  static int IndexOf(int64_t value);
  static int64_t LowerBound(int index);
  static int64_t Width(int index);

 private:
  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_HISTOGRAM_H_
