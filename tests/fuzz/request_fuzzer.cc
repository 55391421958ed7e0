// libFuzzer target: request handling as the server does it for every Attend
// call, from the wire bytes: AttendRequest::ParseFromArray, the in-flight
// memory estimate (EstimateRequestMemory), then validation and decoding
// (ValidateAttendRequest, tensor_codec) against a small model, and the
// encoding of an output of the validated shape. Any input must yield a
// status, never a crash or a sanitizer report; an accepted request must
// satisfy the AttentionJob invariants, and the estimate must cover what
// decoding allocated.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#include "attn/v1/attention.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "server/api/request_validation.h"
#include "server/api/tensor_codec.h"

namespace {

using attn::server::AttentionJob;
using attn::server::Model;

constexpr float kInf = std::numeric_limits<float>::infinity();

void Check(bool ok) {
  if (!ok) std::abort();
}

// A model of width `d_model` without a kernel (validation never calls it).
std::shared_ptr<const Model> MakeModel(const char* name, int64_t d_model,
                                       int64_t num_heads,
                                       int64_t max_sequence_length,
                                       bool causal) {
  auto model = std::make_shared<Model>();
  model->name = name;
  model->version = 1;
  model->source = "<fuzz>";
  model->config.num_heads = num_heads;
  model->config.causal = causal;
  model->config.max_sequence_length = max_sequence_length;
  model->attention.d_model = d_model;
  model->attention.num_heads = num_heads;
  model->attention.num_kv_heads = num_heads;
  model->attention.head_dim = d_model / num_heads;
  model->attention.scale = 1.0f;
  return model;
}

// The models requests are validated against: d_model 8 with 2 heads and
// max_sequence_length 64, and d_model 8 with 4 heads, max_sequence_length 32,
// causal by default.
const std::vector<std::shared_ptr<const Model>>& Models() {
  static const auto* models = new std::vector<std::shared_ptr<const Model>>{
      MakeModel("fuzz", 8, 2, 64, false),
      MakeModel("fuzz_causal", 8, 4, 32, true)};
  return *models;
}

// The invariants attention_job.h promises for a validated job.
void CheckJob(const AttentionJob& job, int64_t d_model) {
  Check(job.batch >= 1 && job.q_len >= 1 && job.kv_len >= 1);
  Check(job.q_len <= job.model->config.max_sequence_length);
  Check(job.kv_len <= job.model->config.max_sequence_length);
  const size_t q = static_cast<size_t>(job.batch * job.q_len * d_model);
  const size_t kv = static_cast<size_t>(job.batch * job.kv_len * d_model);
  Check(job.query.size() == q);
  Check(job.key.empty() || job.key.size() == kv);
  Check(job.value.empty() || (!job.key.empty() && job.value.size() == kv));
  if (job.key.empty()) Check(job.kv_len == job.q_len);
  Check(job.key_lengths.empty() ||
        job.key_lengths.size() == static_cast<size_t>(job.batch));
  for (int32_t len : job.key_lengths) Check(len >= 0 && len <= job.kv_len);
  const size_t mask = static_cast<size_t>((job.mask_per_batch ? job.batch : 1) *
                                          job.q_len * job.kv_len);
  switch (job.mask_kind) {
    case attn::kernels::MaskKind::kNone:
      Check(job.additive_mask.empty() && job.bool_mask.empty());
      break;
    case attn::kernels::MaskKind::kAdditive:
      Check(job.additive_mask.size() == mask && job.bool_mask.empty());
      for (float v : job.additive_mask) Check(!std::isnan(v) && v != kInf);
      break;
    case attn::kernels::MaskKind::kBoolean:
      Check(job.bool_mask.size() == mask && job.additive_mask.empty());
      for (uint8_t v : job.bool_mask) Check(v <= 1);
      break;
  }
  for (const std::vector<float>* t : {&job.query, &job.key, &job.value}) {
    for (float v : *t) Check(std::isfinite(v));
  }
}

}  // namespace

// libprotobuf logs every invalid UTF-8 string it parses; that is an input
// error here (ParseFromArray fails), not worth a line per execution.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attn::v1::AttendRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  // A small response limit, so that the weights check is reachable.
  attn::server::ValidationLimits limits;
  limits.max_message_bytes = int64_t{1} << 20;

  for (const std::shared_ptr<const Model>& model : Models()) {
    const int64_t estimate = attn::server::EstimateRequestMemory(
        request, model->attention.num_heads, limits.max_message_bytes);
    Check(estimate >= static_cast<int64_t>(request.ByteSizeLong()));

    absl::StatusOr<attn::server::ValidatedRequest> v =
        attn::server::ValidateAttendRequest(request, model, limits);
    if (!v.ok()) {
      Check(absl::IsInvalidArgument(v.status()));
      Check(!v.status().message().empty());
      continue;
    }
    const AttentionJob& job = v->job;
    const int64_t d_model = model->attention.d_model;
    CheckJob(job, d_model);
    // What decoding holds must be inside the estimate the memory budget
    // charged before decoding.
    const int64_t decoded =
        4 * static_cast<int64_t>(job.query.size() + job.key.size() +
                                 job.value.size() + job.additive_mask.size()) +
        static_cast<int64_t>(job.bool_mask.size());
    Check(estimate >= decoded);

    // The response path: an output of the validated shape (output = query
    // here) encoded as asked holds exactly its elements.
    attn::v1::Tensor out;
    std::vector<int64_t> shape = {job.q_len, d_model};
    if (v->output_has_batch_dim) shape.insert(shape.begin(), job.batch);
    attn::server::EncodeFloatTensor(job.query.data(), shape, v->output_dtype,
                                    &out);
    absl::StatusOr<int64_t> n = attn::server::NumElements(out, "output");
    Check(n.ok() && *n == static_cast<int64_t>(job.query.size()));
    Check(static_cast<int64_t>(out.data().size()) ==
          *n * attn::server::DataTypeSize(v->output_dtype));
  }
  return 0;
}
