#include "client/loadgen/seq_spec.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace attn::loadgen {
namespace {

absl::StatusOr<int64_t> ParseLength(absl::string_view part,
                                    absl::string_view whole) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(part, &v) || v < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--seq=", whole, ": '", part,
                     "' is not a sequence length (an integer >= 1); use 16, "
                     "8:512 or 16:0.7,128:0.3"));
  }
  return v;
}

}  // namespace

absl::StatusOr<SeqSpec> SeqSpec::Parse(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  SeqSpec spec;
  spec.text_ = std::string(text);
  if (text.empty()) {
    return absl::InvalidArgumentError(
        "--seq is empty; use 16, 8:512 or 16:0.7,128:0.3");
  }
  const bool list = text.find(',') != absl::string_view::npos;
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ',');
  if (!list) {
    const std::vector<absl::string_view> range = absl::StrSplit(text, ':');
    if (range.size() == 1) {
      auto v = ParseLength(range[0], text);
      if (!v.ok()) return v.status();
      spec.values_ = {*v};
      spec.cumulative_ = {1.0};
      return spec;
    }
    // "a:b" is a range when b is an integer and has no '.'; "16:0.5" (one
    // weighted entry) is a fixed length.
    if (range.size() == 2 && range[1].find('.') == absl::string_view::npos) {
      auto lo = ParseLength(range[0], text);
      if (!lo.ok()) return lo.status();
      auto hi = ParseLength(range[1], text);
      if (!hi.ok()) return hi.status();
      if (*lo > *hi) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--seq=", text, ": range minimum ", *lo, " > maximum ", *hi));
      }
      spec.lo_ = *lo;
      spec.hi_ = *hi;
      return spec;
    }
  }
  std::map<int64_t, double> weights;
  double total = 0;
  for (absl::string_view part : parts) {
    const std::vector<absl::string_view> kv = absl::StrSplit(part, ':');
    if (kv.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--seq=", text, ": '", part,
                       "' is not LENGTH:WEIGHT (e.g. 16:0.7,128:0.3)"));
    }
    auto v = ParseLength(kv[0], text);
    if (!v.ok()) return v.status();
    double w = 0;
    if (!absl::SimpleAtod(kv[1], &w) || !(w > 0) || !std::isfinite(w)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--seq=", text, ": weight '", kv[1], "' is not a positive number"));
    }
    weights[*v] += w;
    total += w;
  }
  double acc = 0;
  for (const auto& [v, w] : weights) {
    acc += w / total;
    spec.values_.push_back(v);
    spec.cumulative_.push_back(acc);
  }
  spec.cumulative_.back() = 1.0;
  return spec;
}

int64_t SeqSpec::Sample(std::mt19937_64& rng) const {
  if (lo_ > 0) {
    return std::uniform_int_distribution<int64_t>(lo_, hi_)(rng);
  }
  if (values_.size() == 1) return values_[0];
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), u);
  const size_t i =
      std::min<size_t>(it - cumulative_.begin(), values_.size() - 1);
  return values_[i];
}

std::vector<int64_t> SeqSpec::Support() const {
  if (lo_ == 0) return values_;
  std::vector<int64_t> out;
  for (int64_t v = lo_; v <= hi_; ++v) out.push_back(v);
  return out;
}

double SeqSpec::Mean() const {
  if (lo_ > 0) return (static_cast<double>(lo_) + static_cast<double>(hi_)) / 2;
  double mean = 0;
  double prev = 0;
  for (size_t i = 0; i < values_.size(); ++i) {
    mean += static_cast<double>(values_[i]) * (cumulative_[i] - prev);
    prev = cumulative_[i];
  }
  return mean;
}

int64_t SeqSpec::Max() const { return lo_ > 0 ? hi_ : values_.back(); }

}  // namespace attn::loadgen
