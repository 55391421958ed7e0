// MultiHeadAttention: validation of config, weights and inputs, and the
// forward pass: Q/K/V projections over all tokens (internal/linear), the
// attention core per tile of batch items and heads (internal/attention_core),
// and the output projection.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/internal/attention_core.h"
#include "kernels/internal/dnnl_util.h"
#include "kernels/internal/linear.h"
#include "kernels/internal/masking.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels {
namespace {

using internal::AttentionCore;
using internal::Linear;

// Largest dimension accepted; keeps every product below in int64 range.
constexpr int64_t kMaxDim = int64_t{1} << 24;

absl::Status CheckDim(const char* name, int64_t value) {
  if (value <= 0 || value > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be in [1, ", kMaxDim, "], got ", value));
  }
  return absl::OkStatus();
}

// Checks that a weight tensor has `expected` elements and finite values.
absl::Status CheckTensor(const char* name, const std::vector<float>& values,
                         int64_t expected, const char* expected_formula,
                         bool optional) {
  if (optional && values.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(values.size()) != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " has ", values.size(), " elements, expected ", expected_formula,
        " = ", expected, optional ? " (or 0 for no bias)" : ""));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " has a non-finite value ", values[i], " at element ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AttentionConfig> ResolveConfig(const AttentionConfig& in) {
  AttentionConfig c = in;
  ATTN_RETURN_IF_ERROR(CheckDim("d_model", c.d_model));
  ATTN_RETURN_IF_ERROR(CheckDim("num_heads", c.num_heads));
  if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
  ATTN_RETURN_IF_ERROR(CheckDim("num_kv_heads", c.num_kv_heads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_kv_heads (", c.num_kv_heads,
                     ") must divide num_heads (", c.num_heads, ")"));
  }
  if (c.head_dim == 0) {
    if (c.d_model % c.num_heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "head_dim is unset (0) so num_heads (", c.num_heads,
          ") must divide d_model (", c.d_model, "); set head_dim explicitly"));
    }
    c.head_dim = c.d_model / c.num_heads;
  }
  ATTN_RETURN_IF_ERROR(CheckDim("head_dim", c.head_dim));
  if (c.num_heads * c.head_dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads*head_dim must be at most ", kMaxDim, ", got ",
                     c.num_heads * c.head_dim));
  }
  if (c.scale == 0.0f) {
    c.scale =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  }
  if (!std::isfinite(c.scale) || c.scale < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scale must be finite and positive (0 = 1/sqrt(head_dim)), got ",
        c.scale));
  }
  if (c.compute_dtype != ComputeDType::kFloat32 &&
      c.compute_dtype != ComputeDType::kBFloat16) {
    return absl::InvalidArgumentError("compute_dtype has an unknown value");
  }
  return c;
}

absl::Status CheckWeights(const AttentionConfig& c, const AttentionWeights& w) {
  const int64_t q_out = c.num_heads * c.head_dim;
  const int64_t kv_out = c.num_kv_heads * c.head_dim;
  const int64_t d = c.d_model;
  ATTN_RETURN_IF_ERROR(
      CheckTensor("wq", w.wq, q_out * d, "num_heads*head_dim*d_model", false));
  ATTN_RETURN_IF_ERROR(CheckTensor("wk", w.wk, kv_out * d,
                                   "num_kv_heads*head_dim*d_model", false));
  ATTN_RETURN_IF_ERROR(CheckTensor("wv", w.wv, kv_out * d,
                                   "num_kv_heads*head_dim*d_model", false));
  ATTN_RETURN_IF_ERROR(
      CheckTensor("wo", w.wo, d * q_out, "d_model*num_heads*head_dim", false));
  ATTN_RETURN_IF_ERROR(
      CheckTensor("bq", w.bq, q_out, "num_heads*head_dim", true));
  ATTN_RETURN_IF_ERROR(
      CheckTensor("bk", w.bk, kv_out, "num_kv_heads*head_dim", true));
  ATTN_RETURN_IF_ERROR(
      CheckTensor("bv", w.bv, kv_out, "num_kv_heads*head_dim", true));
  ATTN_RETURN_IF_ERROR(CheckTensor("bo", w.bo, d, "d_model", true));
  return absl::OkStatus();
}

absl::Status CheckInput(const AttentionConfig& c, const AttentionInput& in,
                        const AttentionOutput& out) {
  if (out.output == nullptr) {
    return absl::InvalidArgumentError("output pointer is null");
  }
  if (in.query == nullptr) {
    return absl::InvalidArgumentError("query pointer is null");
  }
  if (in.key == nullptr) {
    return absl::InvalidArgumentError(
        "key pointer is null (pass query for self-attention)");
  }
  if (in.value == nullptr) {
    return absl::InvalidArgumentError(
        "value pointer is null (pass query for self-attention)");
  }
  ATTN_RETURN_IF_ERROR(CheckDim("batch", in.batch));
  ATTN_RETURN_IF_ERROR(CheckDim("q_len", in.q_len));
  ATTN_RETURN_IF_ERROR(CheckDim("kv_len", in.kv_len));
  // Element counts of the largest buffers must stay well inside int64.
  const int64_t kMaxElements = int64_t{1} << 40;
  const int64_t widest = std::max(c.d_model, c.num_heads * c.head_dim);
  if (in.batch * std::max(in.q_len, in.kv_len) > kMaxElements / widest ||
      in.batch * c.num_heads > kMaxElements / in.q_len / in.kv_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("input too large: batch ", in.batch, ", q_len ", in.q_len,
                     ", kv_len ", in.kv_len));
  }
  if ((in.key == in.query || in.value == in.query) && in.kv_len != in.q_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key/value alias query (self-attention) so kv_len must equal q_len (",
        in.q_len, "), got kv_len ", in.kv_len));
  }
  if (in.key_lengths != nullptr) {
    for (int64_t b = 0; b < in.batch; ++b) {
      if (in.key_lengths[b] < 0 || in.key_lengths[b] > in.kv_len) {
        return absl::InvalidArgumentError(absl::StrCat(
            "key_lengths[", b, "] is ", in.key_lengths[b],
            ", expected a value in [0, kv_len = ", in.kv_len, "]"));
      }
    }
  }
  if (in.mask_kind == MaskKind::kNone && in.mask != nullptr) {
    return absl::InvalidArgumentError(
        "mask pointer is set but mask_kind is kNone");
  }
  if (in.mask_kind != MaskKind::kNone && in.mask == nullptr) {
    return absl::InvalidArgumentError(
        "mask_kind is kAdditive or kBoolean but the mask pointer is null");
  }
  if (in.mask_kind != MaskKind::kNone && in.mask_kind != MaskKind::kAdditive &&
      in.mask_kind != MaskKind::kBoolean) {
    return absl::InvalidArgumentError("mask_kind has an unknown value");
  }
  return absl::OkStatus();
}

class MultiHeadAttentionImpl final : public MultiHeadAttention {
 public:
  MultiHeadAttentionImpl(const AttentionConfig& config,
                         const dnnl::engine& engine,
                         std::unique_ptr<Linear> q_proj,
                         std::unique_ptr<Linear> k_proj,
                         std::unique_ptr<Linear> v_proj,
                         std::unique_ptr<Linear> o_proj)
      : config_(config),
        engine_(engine),
        q_proj_(std::move(q_proj)),
        k_proj_(std::move(k_proj)),
        v_proj_(std::move(v_proj)),
        o_proj_(std::move(o_proj)),
        core_(engine, config.num_heads, config.num_kv_heads, config.head_dim) {}

  absl::Status Forward(const AttentionInput& in,
                       const AttentionOutput& out) const override {
    ATTN_RETURN_IF_ERROR(CheckInput(config_, in, out));
    const int64_t q_tokens = in.batch * in.q_len;
    const int64_t kv_tokens = in.batch * in.kv_len;
    const int64_t q_width = config_.num_heads * config_.head_dim;
    const int64_t kv_width = config_.num_kv_heads * config_.head_dim;

    // Per-call scratch: Forward() is const and re-entrant.
    std::vector<float> q(static_cast<size_t>(q_tokens * q_width));
    std::vector<float> k(static_cast<size_t>(kv_tokens * kv_width));
    std::vector<float> v(static_cast<size_t>(kv_tokens * kv_width));
    std::vector<float> context(q.size());
    std::vector<uint8_t> row_masked(static_cast<size_t>(q_tokens));

    ATTN_RETURN_IF_ERROR(q_proj_->Forward(in.query, q_tokens, q.data()));
    ATTN_RETURN_IF_ERROR(k_proj_->Forward(in.key, kv_tokens, k.data()));
    ATTN_RETURN_IF_ERROR(v_proj_->Forward(in.value, kv_tokens, v.data()));

    internal::MaskSpec mask;
    mask.causal = in.causal;
    mask.key_lengths = in.key_lengths;
    mask.kind = in.mask_kind;
    mask.mask = in.mask;
    mask.per_batch = in.mask_per_batch;
    ATTN_RETURN_IF_ERROR(core_.Forward(in.batch, in.q_len, in.kv_len, q.data(),
                                       k.data(), v.data(), mask, context.data(),
                                       out.weights, row_masked.data()));

    ATTN_RETURN_IF_ERROR(
        o_proj_->Forward(context.data(), q_tokens, out.output));
    // A fully masked query row is all zeros (the output bias is not added).
    for (int64_t t = 0; t < q_tokens; ++t) {
      if (row_masked[t]) {
        std::fill(out.output + t * config_.d_model,
                  out.output + (t + 1) * config_.d_model, 0.0f);
      }
    }
    return absl::OkStatus();
  }

  const AttentionConfig& config() const override { return config_; }

 private:
  const AttentionConfig config_;
  dnnl::engine engine_;
  const std::unique_ptr<Linear> q_proj_;
  const std::unique_ptr<Linear> k_proj_;
  const std::unique_ptr<Linear> v_proj_;
  const std::unique_ptr<Linear> o_proj_;
  const AttentionCore core_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MultiHeadAttention>> MultiHeadAttention::Create(
    const AttentionConfig& config, AttentionWeights weights) {
  absl::StatusOr<AttentionConfig> resolved = ResolveConfig(config);
  if (!resolved.ok()) return resolved.status();
  const AttentionConfig& c = *resolved;
  ATTN_RETURN_IF_ERROR(CheckWeights(c, weights));

  dnnl::engine engine;
  ATTN_RETURN_IF_ERROR(
      internal::CallDnnl("creating the CPU engine", [&]() -> absl::Status {
        engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
        return absl::OkStatus();
      }));
  if (c.compute_dtype == ComputeDType::kBFloat16 &&
      dnnl::get_effective_cpu_isa() < dnnl::cpu_isa::avx512_core) {
    return absl::UnimplementedError(
        "compute_dtype bfloat16 needs a CPU with AVX-512 (oneDNN has only a "
        "slow reference bf16 GEMM otherwise); use float32");
  }

  const int64_t d = c.d_model;
  const int64_t q_width = c.num_heads * c.head_dim;
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  // The attention scale is folded into the Q projection.
  auto q_proj =
      Linear::Create(engine, "Q projection (wq)", d, q_width, weights.wq,
                     weights.bq, c.scale, c.compute_dtype);
  if (!q_proj.ok()) return q_proj.status();
  auto k_proj = Linear::Create(engine, "K projection (wk)", d, kv_width,
                               weights.wk, weights.bk, 1.0f, c.compute_dtype);
  if (!k_proj.ok()) return k_proj.status();
  auto v_proj = Linear::Create(engine, "V projection (wv)", d, kv_width,
                               weights.wv, weights.bv, 1.0f, c.compute_dtype);
  if (!v_proj.ok()) return v_proj.status();
  auto o_proj = Linear::Create(engine, "output projection (wo)", q_width, d,
                               weights.wo, weights.bo, 1.0f, c.compute_dtype);
  if (!o_proj.ok()) return o_proj.status();
  return std::unique_ptr<MultiHeadAttention>(new MultiHeadAttentionImpl(
      c, engine, *std::move(q_proj), *std::move(k_proj), *std::move(v_proj),
      *std::move(o_proj)));
}

absl::Status MultiHeadAttention::ForwardBatch(
    absl::Span<const AttentionInput> inputs,
    absl::Span<const AttentionOutput> outputs) const {
  if (inputs.size() != outputs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardBatch got ", inputs.size(), " inputs and ",
                     outputs.size(), " outputs"));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    absl::Status s = Forward(inputs[i], outputs[i]);
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("batch item ", i, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace attn::kernels
