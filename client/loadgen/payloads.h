// PayloadSet: the AttendRequest messages of a run, built once before the
// load starts (random inputs for each distinct query length of --seq), so
// that sending costs only serialization.
//
// Usage:
//   absl::StatusOr<PayloadSet> set = PayloadSet::Build(options, d_model);
//   const Payload& p = set->Pick(rng);   // p.request is shared: never modify
//
// Immutable after Build: concurrent Pick() calls with per-thread generators
// and concurrent reads of the requests are safe.
#ifndef ATTNSERVE_CLIENT_LOADGEN_PAYLOADS_H_
#define ATTNSERVE_CLIENT_LOADGEN_PAYLOADS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <random>

#include "absl/status/statusor.h"
#include "attn/v1/attention.pb.h"
#include "client/loadgen/options.h"

namespace attn::loadgen {

struct Payload {
  v1::AttendRequest request;
  int64_t tokens = 0;  // query tokens: batch * Sq
};

class PayloadSet {
 public:
  // Refuses more than this many bytes of payload (use a weighted --seq list
  // instead of a wide range with long sequences).
  static constexpr int64_t kMaxTotalBytes = int64_t{2} << 30;

  // Errors: INVALID_ARGUMENT when d_model < 1 or the payloads would exceed
  // kMaxTotalBytes.
  static absl::StatusOr<PayloadSet> Build(const Options& options,
                                          int64_t d_model);

  // A payload with Sq drawn from --seq.
  const Payload& Pick(std::mt19937_64& rng) const;

  int64_t total_bytes() const { return total_bytes_; }
  size_t size() const { return by_length_.size(); }

 private:
  const SeqSpec* spec_ = nullptr;
  std::shared_ptr<const SeqSpec> spec_owner_;
  std::map<int64_t, std::shared_ptr<const Payload>> by_length_;
  int64_t total_bytes_ = 0;
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_PAYLOADS_H_
