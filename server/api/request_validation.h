// Turns an AttendRequest into a self-contained AttentionJob, checking every
// shape, dtype, byte length and value BEFORE any compute.
//
//   absl::StatusOr<std::shared_ptr<const Model>> model = repo.Get(...);
//   absl::StatusOr<ValidatedRequest> v =
//       ValidateAttendRequest(request, *model, limits);
//   if (!v.ok()) return v.status();   // INVALID_ARGUMENT, message names field
//
// Decisions documented here (the proto leaves them open):
//  * `value` without `key` is INVALID_ARGUMENT (ambiguous: was `key` meant to
//    be `query`, or forgotten?). `key` without `value` means value = key.
//  * key/value must have the same dtype and rank as query.
//  * Zero-size B, Sq or Sk is INVALID_ARGUMENT (nothing to attend).
//  * An additive (float) mask may hold -Inf (masks out); NaN/+Inf are
//    rejected. A BOOL mask is true = masked out.
//  * Output (and attention weights, when asked) must fit the server's max
//    message size, else INVALID_ARGUMENT before compute.
//
// Free function, no state: thread-safe.
#ifndef ATTNSERVE_SERVER_API_REQUEST_VALIDATION_H_
#define ATTNSERVE_SERVER_API_REQUEST_VALIDATION_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "attn/v1/attention.pb.h"
#include "server/models/model_repository.h"
#include "server/serving/attention_job.h"

namespace attn::server {

// Server-wide limits the validator enforces.
struct ValidationLimits {
  // Largest response the server may send (and request it accepts); the
  // output and the attention weights must fit. Default: 256 MiB, the
  // builder's default max message size.
  int64_t max_message_bytes = int64_t{256} << 20;
};

// A validated request: the compute job plus how to present its result.
struct ValidatedRequest {
  AttentionJob job;
  v1::DataType output_dtype = v1::FLOAT32;  // FLOAT32, BFLOAT16 or FLOAT16
  bool output_has_batch_dim = true;         // query was rank 3
};

// Validates `request` against `model` and decodes its tensors to fp32.
// REQUIRES: model != nullptr (resolve it with ModelRepository::Get first; an
// unknown model/version is NOT_FOUND there).
// Errors: INVALID_ARGUMENT naming the field, the expected and actual value.
absl::StatusOr<ValidatedRequest> ValidateAttendRequest(
    const v1::AttendRequest& request, std::shared_ptr<const Model> model,
    const ValidationLimits& limits);

// Bytes the server holds for `request` while it is in flight, from its
// encoded sizes alone (nothing decoded): the parsed message, its tensors
// decoded to fp32, the fp32 output and its encoding, and, when asked, the
// attention weights (at most `max_message_bytes`, the response limit) for a
// model with `num_heads` heads. Never negative; saturates instead of
// overflowing on absurd shapes (validation rejects those anyway).
int64_t EstimateRequestMemory(const v1::AttendRequest& request,
                              int64_t num_heads, int64_t max_message_bytes);

// The gRPC receive limit a model needs: its largest single-sequence request,
// fp32 query, key and value of max_sequence_length x d_model, a BOOL mask of
// max_sequence_length^2 and 64 KiB of framing; at least 4 MiB (gRPC's
// default) and at most INT32_MAX. Larger requests (a longer batch) are
// refused by gRPC with RESOURCE_EXHAUSTED before the server reads them.
int64_t ReceiveLimitFor(const Model& model);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_REQUEST_VALIDATION_H_
