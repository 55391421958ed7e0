// A validated, self-contained unit of work for the executor: fp32 input
// buffers plus everything the kernel needs, and the result it produces.
//
// Jobs are built by request_validation (from an AttendRequest) and consumed by
// the Batcher. They know nothing of gRPC or protobuf.
#ifndef ATTNSERVE_SERVER_SERVING_ATTENTION_JOB_H_
#define ATTNSERVE_SERVER_SERVING_ATTENTION_JOB_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/attention.h"
#include "server/models/model_repository.h"

namespace attn::server {

// Inputs of one attention call. Owns its buffers (movable, not shared), so it
// may outlive the request message it was decoded from.
//
// Invariants (established by ValidateAttendRequest):
//   model != nullptr; batch, q_len, kv_len >= 1;
//   query.size() == batch * q_len * d_model;
//   key/value are either empty (alias `query`, self-attention; then
//   kv_len == q_len) or hold batch * kv_len * d_model values; `value` empty
//   with `key` non-empty means value aliases key;
//   key_lengths is empty or has `batch` entries in [0, kv_len];
//   mask buffers match mask_kind and mask_per_batch.
struct AttentionJob {
  std::shared_ptr<const Model> model;

  int64_t batch = 1;   // B
  int64_t q_len = 0;   // Sq
  int64_t kv_len = 0;  // Sk

  std::vector<float> query;
  std::vector<float> key;
  std::vector<float> value;

  bool causal = false;
  std::vector<int32_t> key_lengths;

  kernels::MaskKind mask_kind = kernels::MaskKind::kNone;
  std::vector<float> additive_mask;  // used when mask_kind == kAdditive
  std::vector<uint8_t> bool_mask;    // used when mask_kind == kBoolean
  bool mask_per_batch = false;

  bool return_weights = false;

  // Tokens this job contributes to a batch (B * Sq); what max_batch_tokens
  // counts.
  int64_t tokens() const { return batch * q_len; }

  // Kernel view of the buffers above. The pointers borrow from this job.
  kernels::AttentionInput MakeKernelInput() const;
};

// Timing of one executed job, reported back to the client.
struct JobTiming {
  int64_t queue_us = 0;        // submit -> start of compute (or drop)
  int64_t compute_us = 0;      // kernel call that served the job
  int32_t batch_requests = 0;  // requests served by that kernel call
};

// What the executor produces for one job.
struct AttentionResult {
  std::vector<float> output;   // [B, Sq, d_model]
  std::vector<float> weights;  // [B, H, Sq, Sk] when asked, else empty
  JobTiming timing;
  // Session steps: the session's length after the step.
  int64_t session_length = 0;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_ATTENTION_JOB_H_
