// SeqSpec: the distribution of query sequence lengths of attn_loadgen
// requests (--seq).
//
//   "16"              every request has Sq = 16
//   "8:512"           Sq uniform over the integers 8..512 (both included)
//   "16:0.7,128:0.3"  weighted list: 16 with weight 0.7, 128 with weight 0.3
//                     (weights are relative; they need not sum to 1)
//
// Usage:
//   absl::StatusOr<SeqSpec> spec = SeqSpec::Parse("16:0.7,128:0.3");
//   std::mt19937_64 rng(1);
//   int64_t sq = spec->Sample(rng);
//
// Immutable after Parse; Sample() is const and thread-safe given a
// per-thread generator.
#ifndef ATTNSERVE_CLIENT_LOADGEN_SEQ_SPEC_H_
#define ATTNSERVE_CLIENT_LOADGEN_SEQ_SPEC_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attn::loadgen {

class SeqSpec {
 public:
  // Errors: INVALID_ARGUMENT naming the bad part of `text` (empty, a length
  // < 1, a range with min > max, a weight that is not a positive number).
  static absl::StatusOr<SeqSpec> Parse(absl::string_view text);

  // One length drawn from the distribution.
  int64_t Sample(std::mt19937_64& rng) const;

  // Every length that Sample can return, increasing.
  std::vector<int64_t> Support() const;
  // Expected value of Sample.
  double Mean() const;
  // Largest length that Sample can return.
  int64_t Max() const;

  // The canonical text ("16", "8:512", "16:0.7,128:0.3").
  const std::string& text() const { return text_; }

 private:
  SeqSpec() = default;

  std::string text_;
  // Uniform range when lo_ > 0; otherwise the weighted list below.
  int64_t lo_ = 0;
  int64_t hi_ = 0;
  std::vector<int64_t> values_;
  std::vector<double> cumulative_;  // normalized, last = 1
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_SEQ_SPEC_H_
