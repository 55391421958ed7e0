#include "server/api/request_validation.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/api/tensor_codec.h"

namespace attn::server {
namespace {

std::string Shape(const v1::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.shape(), ", "), "]");
}

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

// Shape of a query/key/value tensor, normalised to [B, S, D].
struct SeqShape {
  int64_t batch = 1;
  int64_t seq = 0;
  int64_t width = 0;
};

// Checks rank (2 or 3), non-negative dims, width == d_model, and
// 1 <= seq <= max_sequence_length, batch >= 1.
absl::StatusOr<SeqShape> CheckSeqTensor(const v1::Tensor& t,
                                        absl::string_view name,
                                        const Model& model) {
  const int rank = t.shape_size();
  if (rank != 2 && rank != 3) {
    return Invalid(absl::StrCat(name, " has rank ", rank, " (shape ", Shape(t),
                                "); expected [B, S, d_model] or [S, d_model]"));
  }
  if (t.dtype() != v1::FLOAT32 && t.dtype() != v1::BFLOAT16 &&
      t.dtype() != v1::FLOAT16) {
    return Invalid(absl::StrCat(name, " dtype is ", DataTypeName(t.dtype()),
                                "; expected FLOAT32, BFLOAT16 or FLOAT16"));
  }
  ATTN_RETURN_IF_ERROR(NumElements(t, name).status());
  SeqShape s;
  s.batch = rank == 3 ? t.shape(0) : 1;
  s.seq = t.shape(rank - 2);
  s.width = t.shape(rank - 1);
  const int64_t d_model = model.attention.d_model;
  if (s.width != d_model) {
    return Invalid(absl::StrCat(name, " last dim is ", s.width, ", model '",
                                model.name, "' has d_model ", d_model));
  }
  if (s.batch < 1) {
    return Invalid(absl::StrCat(name, " has batch size ", s.batch, " (shape ",
                                Shape(t), "); need at least 1"));
  }
  if (s.seq < 1) {
    return Invalid(absl::StrCat(name, " has sequence length ", s.seq,
                                " (shape ", Shape(t), "); need at least 1"));
  }
  const int64_t max_seq = model.config.max_sequence_length;
  if (s.seq > max_seq) {
    return Invalid(absl::StrCat(name, " sequence length ", s.seq,
                                " exceeds model '", model.name,
                                "' max_sequence_length ", max_seq));
  }
  return s;
}

// Checks that key/value match the query's rank, dtype, batch.
absl::Status CheckLikeQuery(const v1::Tensor& t, absl::string_view name,
                            const v1::Tensor& query, const SeqShape& q,
                            const SeqShape& s) {
  if (t.shape_size() != query.shape_size()) {
    return Invalid(absl::StrCat(name, " has rank ", t.shape_size(), " (shape ",
                                Shape(t), ") but query has rank ",
                                query.shape_size(), "; they must match"));
  }
  if (t.dtype() != query.dtype()) {
    return Invalid(absl::StrCat(
        name, " dtype is ", DataTypeName(t.dtype()), " but query dtype is ",
        DataTypeName(query.dtype()), "; they must match"));
  }
  if (s.batch != q.batch) {
    return Invalid(absl::StrCat(name, " batch size is ", s.batch,
                                " but query batch size is ", q.batch));
  }
  return absl::OkStatus();
}

absl::Status CheckOutputSize(int64_t elements, int64_t itemsize,
                             absl::string_view what,
                             const ValidationLimits& limits) {
  int64_t bytes = 0;
  if (__builtin_mul_overflow(elements, itemsize, &bytes) ||
      bytes > limits.max_message_bytes) {
    return Invalid(absl::StrCat(
        what, " would be ", elements, " x ", itemsize,
        " bytes, over the server's max message size of ",
        limits.max_message_bytes, " bytes; send smaller requests",
        what == "attention_weights" ? " or do not ask for the weights" : ""));
  }
  return absl::OkStatus();
}

absl::Status DecodeMask(const v1::AttendRequest& request, int64_t batch,
                        int64_t q_len, int64_t kv_len, AttentionJob* job) {
  const v1::Tensor& m = request.attn_mask();
  const int rank = m.shape_size();
  ATTN_RETURN_IF_ERROR(NumElements(m, "attn_mask").status());
  bool shape_ok = false;
  if (rank == 2) {
    shape_ok = m.shape(0) == q_len && m.shape(1) == kv_len;
  } else if (rank == 3) {
    shape_ok =
        m.shape(0) == batch && m.shape(1) == q_len && m.shape(2) == kv_len;
  }
  if (!shape_ok) {
    return Invalid(absl::StrCat(
        "attn_mask shape is ", Shape(m), "; expected [Sq, Sk] = [", q_len, ", ",
        kv_len, "] or [B, Sq, Sk] = [", batch, ", ", q_len, ", ", kv_len, "]"));
  }
  job->mask_per_batch = rank == 3;
  if (m.dtype() == v1::BOOL) {
    job->mask_kind = kernels::MaskKind::kBoolean;
    return DecodeBoolTensor(m, "attn_mask", &job->bool_mask);
  }
  if (m.dtype() != v1::FLOAT32 && m.dtype() != v1::BFLOAT16 &&
      m.dtype() != v1::FLOAT16) {
    return Invalid(absl::StrCat("attn_mask dtype is ", DataTypeName(m.dtype()),
                                "; expected BOOL (true = masked out) or "
                                "FLOAT32/BFLOAT16/FLOAT16 (added to scores)"));
  }
  job->mask_kind = kernels::MaskKind::kAdditive;
  return DecodeFloatTensor(m, "attn_mask",
                           NonFinitePolicy::kAllowNegativeInfinity,
                           &job->additive_mask);
}

// Rotary embeddings need the keys' positions (self-attention only); a
// sliding window is causal.
absl::Status CheckPositional(const Model& model, bool has_key,
                             const AttentionJob& job) {
  const kernels::AttentionConfig& a = model.attention;
  if (a.rope_theta != 0.0 && has_key) {
    return Invalid(absl::StrCat(
        "model '", model.name,
        "' applies rotary position embeddings "
        "(rope_theta = ",
        a.rope_theta,
        "), which need the keys' positions: "
        "cross-attention (key/value) is not accepted; omit key and value "
        "(self-attention over the query, positions 0..S-1) or use a "
        "session (session_id) for decoding"));
  }
  if (a.sliding_window > 0 && !job.causal) {
    return Invalid(absl::StrCat(
        "model '", model.name,
        "' has a sliding window (sliding_window = ", a.sliding_window,
        "), which is defined for causal attention only; "
        "omit causal or set it to true"));
  }
  if (a.sliding_window > 0 && job.kv_len < job.q_len) {
    return Invalid(absl::StrCat("model '", model.name,
                                "' has a sliding window, which needs the key "
                                "sequence length (",
                                job.kv_len, ") >= the query's (", job.q_len,
                                ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ValidatedRequest> ValidateAttendRequest(
    const v1::AttendRequest& request, std::shared_ptr<const Model> model,
    const ValidationLimits& limits) {
  ValidatedRequest v;
  AttentionJob& job = v.job;

  // Output dtype first: cheap, and independent of the tensors.
  switch (request.output_dtype()) {
    case v1::DATA_TYPE_UNSPECIFIED:
      v.output_dtype = v1::FLOAT32;
      break;
    case v1::FLOAT32:
    case v1::BFLOAT16:
    case v1::FLOAT16:
      v.output_dtype = request.output_dtype();
      break;
    default:
      return Invalid(
          absl::StrCat("output_dtype ", DataTypeName(request.output_dtype()),
                       " is not supported; use FLOAT32, BFLOAT16 or FLOAT16"));
  }

  // Query.
  if (!request.has_query()) {
    return Invalid(
        "query is missing; send a [B, Sq, d_model] or [Sq, d_model] tensor");
  }
  const v1::Tensor& query = request.query();
  ATTN_ASSIGN_OR_RETURN(SeqShape q, CheckSeqTensor(query, "query", *model));
  v.output_has_batch_dim = query.shape_size() == 3;

  // Key / value.
  if (request.has_value() && !request.has_key()) {
    return Invalid(
        "value is given without key; send key too (or neither, for "
        "self-attention)");
  }
  SeqShape k = q;
  if (request.has_key()) {
    ATTN_ASSIGN_OR_RETURN(k, CheckSeqTensor(request.key(), "key", *model));
    ATTN_RETURN_IF_ERROR(CheckLikeQuery(request.key(), "key", query, q, k));
    if (request.has_value()) {
      ATTN_ASSIGN_OR_RETURN(SeqShape val,
                            CheckSeqTensor(request.value(), "value", *model));
      ATTN_RETURN_IF_ERROR(
          CheckLikeQuery(request.value(), "value", query, q, val));
      if (val.seq != k.seq) {
        return Invalid(absl::StrCat("value sequence length is ", val.seq,
                                    " but key sequence length is ", k.seq,
                                    "; they must match"));
      }
    }
  }
  job.model = model;
  job.batch = q.batch;
  job.q_len = q.seq;
  job.kv_len = k.seq;

  // key_lengths.
  if (request.key_lengths_size() != 0) {
    if (request.key_lengths_size() != job.batch) {
      return Invalid(absl::StrCat(
          "key_lengths has ", request.key_lengths_size(),
          " entries; expected one per batch item (", job.batch, ") or none"));
    }
    for (int i = 0; i < request.key_lengths_size(); ++i) {
      const int32_t len = request.key_lengths(i);
      if (len < 0 || len > job.kv_len) {
        return Invalid(absl::StrCat("key_lengths[", i, "] is ", len,
                                    "; expected a value in [0, ", job.kv_len,
                                    "] (the key sequence length)"));
      }
    }
    job.key_lengths.assign(request.key_lengths().begin(),
                           request.key_lengths().end());
  }

  job.causal = request.has_causal() ? request.causal() : model->config.causal;
  job.return_weights = request.return_attention_weights();
  ATTN_RETURN_IF_ERROR(CheckPositional(*model, request.has_key(), job));

  // Response size: output, and weights when asked.
  const int64_t out_item = DataTypeSize(v.output_dtype);
  ATTN_RETURN_IF_ERROR(
      CheckOutputSize(job.batch * job.q_len * model->attention.d_model,
                      out_item, "output", limits));
  if (job.return_weights) {
    int64_t n = 0;
    if (__builtin_mul_overflow(job.batch * model->attention.num_heads,
                               job.q_len * job.kv_len, &n)) {
      n = std::numeric_limits<int64_t>::max();
    }
    ATTN_RETURN_IF_ERROR(
        CheckOutputSize(n, out_item, "attention_weights", limits));
  }

  // Mask (shape checked before any large decode).
  if (request.has_attn_mask()) {
    ATTN_RETURN_IF_ERROR(
        DecodeMask(request, job.batch, job.q_len, job.kv_len, &job));
  }

  // Decode (byte lengths, dtype, finiteness) last: the expensive part.
  ATTN_RETURN_IF_ERROR(
      DecodeFloatTensor(query, "query", NonFinitePolicy::kReject, &job.query));
  if (request.has_key()) {
    ATTN_RETURN_IF_ERROR(DecodeFloatTensor(request.key(), "key",
                                           NonFinitePolicy::kReject, &job.key));
  }
  if (request.has_value()) {
    ATTN_RETURN_IF_ERROR(DecodeFloatTensor(
        request.value(), "value", NonFinitePolicy::kReject, &job.value));
  }
  return v;
}

namespace {

// a + b and a * b, saturating at INT64_MAX (inputs >= 0).
int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max()
                                          : r;
}
int64_t SatMul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? std::numeric_limits<int64_t>::max()
                                          : r;
}

// Bytes of `t` once decoded to fp32 (BOOL masks decode to one float each).
int64_t DecodedBytes(const v1::Tensor& t) {
  const int64_t n = static_cast<int64_t>(t.data().size());
  switch (t.dtype()) {
    case v1::BFLOAT16:
    case v1::FLOAT16:
      return SatMul(n, 2);
    case v1::BOOL:
      return SatMul(n, 4);
    default:
      return n;
  }
}

// Sequence length of a [B, S, D] or [S, D] tensor (0 if not that rank).
int64_t SeqLen(const v1::Tensor& t) {
  const int rank = t.shape_size();
  if (rank < 2) return 0;
  return std::max<int64_t>(0, t.shape(rank - 2));
}

}  // namespace

int64_t EstimateRequestMemory(const v1::AttendRequest& request,
                              int64_t num_heads, int64_t max_message_bytes) {
  int64_t bytes = static_cast<int64_t>(request.ByteSizeLong());
  const int64_t query = DecodedBytes(request.query());
  bytes = SatAdd(bytes, query);
  if (request.has_key()) bytes = SatAdd(bytes, DecodedBytes(request.key()));
  if (request.has_value()) {
    bytes = SatAdd(bytes, DecodedBytes(request.value()));
  }
  if (request.has_attn_mask()) {
    bytes = SatAdd(bytes, DecodedBytes(request.attn_mask()));
  }
  // The fp32 output has the query's decoded size; its encoding at most as
  // much again.
  bytes = SatAdd(bytes, SatMul(query, 2));
  if (request.return_attention_weights()) {
    const v1::Tensor& q = request.query();
    const int64_t batch =
        q.shape_size() == 3 ? std::max<int64_t>(0, q.shape(0)) : 1;
    const int64_t sq = SeqLen(q);
    const int64_t sk = request.has_key() ? SeqLen(request.key()) : sq;
    const int64_t weights =
        SatMul(SatMul(SatMul(batch, num_heads), SatMul(sq, sk)), 4);
    // fp32 weights and their encoding; larger ones are refused by
    // validation (the response limit), so they never get that far.
    bytes = SatAdd(bytes, SatMul(std::min(weights, max_message_bytes), 2));
  }
  return bytes;
}

int64_t ReceiveLimitFor(const Model& model) {
  constexpr int64_t kMin = int64_t{4} << 20;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t length = model.config.max_sequence_length;
  const int64_t width = model.attention.d_model;
  int64_t bytes = SatMul(SatMul(SatMul(length, width), 3), 4);
  bytes = SatAdd(bytes, SatMul(length, length));
  bytes = SatAdd(bytes, int64_t{64} << 10);
  return std::min(kMax, std::max(kMin, bytes));
}

}  // namespace attn::server
