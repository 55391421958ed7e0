// MultiHeadAttention: validation of config, weights and inputs, and the
// forward pass shared by Forward and ForwardBatch: one fused QKV projection
// over the tokens of all self-attention items (internal/linear), the tiled
// online-softmax core over every sequence at once (internal/flash_core; the
// materialising internal/attention_core when weights are requested), and
// one output projection over all tokens.
#include "kernels/attention.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/internal/attention_core.h"
#include "kernels/internal/dnnl_util.h"
#include "kernels/internal/flash_core.h"
#include "kernels/internal/kernel_isa.h"
#include "kernels/internal/linear.h"
#include "kernels/internal/masking.h"
#include "kernels/internal/paged_decode.h"
#include "kernels/internal/rope.h"
#include "kernels/internal/scratch_arena.h"
#include "kernels/internal/sliding_window.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels {
namespace {

using internal::AttentionCore;
using internal::Linear;
using internal::ScratchLayout;
using internal::ScratchPool;

// Gathers and scatters of at least this many floats (256 KiB) are split
// across the OpenMP team.
constexpr int64_t kParallelCopy = int64_t{1} << 16;

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
  if (!std::isfinite(c.rope_theta) || c.rope_theta < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_theta must be finite and >= 0 (0 = no rotary embedding), got ",
        c.rope_theta));
  }
  if (c.rope_style != AttentionConfig::RopeStyle::kHalf &&
      c.rope_style != AttentionConfig::RopeStyle::kInterleaved) {
    return absl::InvalidArgumentError("rope_style has an unknown value");
  }
  if (c.rope_theta == 0.0) {
    if (c.rope_dims != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rope_dims is ", c.rope_dims,
          " but rope_theta is 0 (no rotary embedding); set rope_theta"));
    }
  } else {
    if (c.rope_dims == 0) c.rope_dims = c.head_dim;
    if (c.rope_dims < 2 || c.rope_dims > c.head_dim || c.rope_dims % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rope_dims must be even and in [2, head_dim = ", c.head_dim,
          "] (0 = head_dim), got ", c.rope_dims));
    }
  }
  if (c.sliding_window < 0 || c.sliding_window > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("sliding_window must be in [0, ", kMaxDim,
                     "] (0 = no window), got ", c.sliding_window));
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
  if (c.rope_theta != 0.0 && (in.key != in.query || in.value != in.query)) {
    return absl::InvalidArgumentError(
        "this layer applies rotary position embeddings (rope_theta is set), "
        "which need the positions of the keys: send self-attention only "
        "(omit key and value; positions are 0..S-1), not cross-attention");
  }
  if (c.sliding_window > 0 && !in.causal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "this layer has a sliding window (sliding_window = ", c.sliding_window,
        "), which is defined for causal attention only: set causal"));
  }
  if (c.sliding_window > 0 && in.kv_len < in.q_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "this layer has a sliding window, which needs kv_len >= q_len, got "
        "q_len ",
        in.q_len, " and kv_len ", in.kv_len));
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

absl::Status CheckPaged(const AttentionConfig& c, const float* x,
                        absl::Span<const PagedSequence> seqs,
                        const KvPool& pool, const float* out,
                        int64_t* total_tokens) {
  const KvPoolLayout& L = pool.layout;
  if (x == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("ForwardPaged: x or out is null");
  }
  if (L.num_kv_heads != c.num_kv_heads || L.head_dim != c.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV pool layout has num_kv_heads ", L.num_kv_heads, " and head_dim ",
        L.head_dim, ", but the layer has num_kv_heads ", c.num_kv_heads,
        " and head_dim ", c.head_dim));
  }
  if (L.block_tokens < 1 || L.block_tokens > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV pool block_tokens must be in [1, 256], got ", L.block_tokens));
  }
  if (L.dtype != KvPoolLayout::Dtype::kF32 &&
      L.dtype != KvPoolLayout::Dtype::kBf16) {
    return absl::InvalidArgumentError("KV pool dtype has an unknown value");
  }
  if (pool.k_base == nullptr || pool.v_base == nullptr || pool.num_blocks < 1) {
    return absl::InvalidArgumentError(
        "KV pool has no memory (null k_base/v_base or num_blocks < 1)");
  }
  int64_t total = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const PagedSequence& s = seqs[i];
    auto error = [i](auto... parts) {
      return absl::InvalidArgumentError(
          absl::StrCat("paged sequence ", i, ": ", parts...));
    };
    if (s.start_position < 0 || s.start_position > kMaxDim) {
      return error("start_position must be in [0, ", kMaxDim, "], got ",
                   s.start_position);
    }
    if (s.new_tokens < 1 || s.new_tokens > kMaxDim) {
      return error("new_tokens must be in [1, ", kMaxDim, "], got ",
                   s.new_tokens);
    }
    if (s.block_table == nullptr) return error("block_table is null");
    const int64_t length = s.start_position + s.new_tokens;
    const int64_t needed = (length + L.block_tokens - 1) / L.block_tokens;
    if (s.num_blocks < needed) {
      return error(length, " tokens need ", needed, " blocks of ",
                   L.block_tokens, " tokens, but the block table has ",
                   s.num_blocks);
    }
    for (int64_t b = 0; b < needed; ++b) {
      if (s.block_table[b] < 0 || s.block_table[b] >= pool.num_blocks) {
        return error("block_table[", b, "] = ", s.block_table[b],
                     " is outside the pool's ", pool.num_blocks, " blocks");
      }
    }
    total += s.new_tokens;
  }
  if (total > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardPaged: at most ", kMaxDim,
                     " new tokens per call, got ", total));
  }
  *total_tokens = total;
  return absl::OkStatus();
}

// The dtype whose core the flash core runs. Sliding-window layers split
// every sequence into windowed sequences, which the packing bf16 units
// (AMX, vdpbf16ps) would each re-pack (memory O(S * window * head_dim)):
// they run the fp32 core (AVX-512, else Highway), which reads short
// sequences in place.
ComputeDType FlashDtype(const AttentionConfig& c) {
  return c.sliding_window > 0 ? ComputeDType::kFloat32 : c.compute_dtype;
}

// How one item of a Forward/ForwardBatch call maps onto the shared buffers.
struct ItemPlan {
  bool self = false;      // key == value == query: fused QKV projection
  int64_t q_tokens = 0;   // batch * q_len
  int64_t kv_tokens = 0;  // batch * kv_len
  int64_t q_row = 0;      // first row in the context / output buffers
  int64_t src_row = 0;    // first row in the self or cross query buffer
  int64_t kv_row = 0;     // first row in the cross key/value buffers
};

class MultiHeadAttentionImpl final : public MultiHeadAttention {
 public:
  MultiHeadAttentionImpl(const AttentionConfig& config,
                         const dnnl::engine& engine,
                         std::unique_ptr<Linear> qkv_proj,
                         std::unique_ptr<Linear> q_proj,
                         std::unique_ptr<Linear> k_proj,
                         std::unique_ptr<Linear> v_proj,
                         std::unique_ptr<Linear> o_proj)
      : config_(config),
        engine_(engine),
        qkv_proj_(std::move(qkv_proj)),
        q_proj_(std::move(q_proj)),
        k_proj_(std::move(k_proj)),
        v_proj_(std::move(v_proj)),
        o_proj_(std::move(o_proj)),
        core_(engine, config.num_heads, config.num_kv_heads, config.head_dim),
        flash_(config.num_heads, config.num_kv_heads, config.head_dim,
               FlashDtype(config)),
        rope_(config),
        decode_span_(internal::DecodeSpanFor(flash_.choice())) {}

  std::string ImplementationSummary() const override {
    std::string projections = "fp32 (oneDNN)";
    if (config_.compute_dtype == ComputeDType::kBFloat16) {
      projections = qkv_proj_->emulated_bf16()
                        ? "bf16 emulated on fp32 GEMMs (no AVX-512)"
                        : "bf16 (oneDNN)";
    }
    return absl::StrCat("core ", flash_.description(), ", projections ",
                        projections);
  }

  absl::Status Forward(const AttentionInput& in,
                       const AttentionOutput& out) const override {
    ATTN_RETURN_IF_ERROR(CheckInput(config_, in, out));
    return Run(absl::MakeConstSpan(&in, 1), absl::MakeConstSpan(&out, 1));
  }

  absl::Status ForwardBatch(
      absl::Span<const AttentionInput> inputs,
      absl::Span<const AttentionOutput> outputs) const override {
    if (inputs.size() != outputs.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ForwardBatch got ", inputs.size(), " inputs and ",
                       outputs.size(), " outputs"));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      absl::Status s = CheckInput(config_, inputs[i], outputs[i]);
      if (!s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("batch item ", i, ": ", s.message()));
      }
    }
    if (inputs.empty()) return absl::OkStatus();
    return Run(inputs, outputs);
  }

  absl::Status ForwardPaged(const float* x,
                            absl::Span<const PagedSequence> seqs,
                            const KvPool& pool, float* out) const override {
    int64_t total = 0;
    ATTN_RETURN_IF_ERROR(CheckPaged(config_, x, seqs, pool, out, &total));
    if (seqs.empty()) return absl::OkStatus();
    const AttentionConfig& c = config_;
    const int64_t q_width = c.num_heads * c.head_dim;
    const int64_t qkv_width = q_width + 2 * c.num_kv_heads * c.head_dim;
    ScratchLayout layout;
    const size_t qkv_at = layout.Add<float>(total * qkv_width);
    const size_t ctx_at = layout.Add<float>(total * q_width);
    ScratchPool::Lease arena = pool_.Acquire();
    void* base = nullptr;
    ATTN_RETURN_IF_ERROR(
        internal::CallDnnl("allocating decode attention scratch", [&] {
          base = arena->Reserve(layout.bytes());
          return absl::OkStatus();
        }));
    float* qkv = ScratchLayout::At<float>(base, qkv_at);
    float* ctx = ScratchLayout::At<float>(base, ctx_at);
    // Q (scaled: the scale is folded into the fused weights), K, V.
    ATTN_RETURN_IF_ERROR(qkv_proj_->Forward(x, total, qkv));
    internal::PagedDecode(qkv, seqs, pool, c.num_heads, rope_, c.sliding_window,
                          decode_span_, ctx);
    return o_proj_->Forward(ctx, total, out);
  }

  const AttentionConfig& config() const override { return config_; }

 private:
  // The forward pass over validated items: one fused QKV GEMM over the
  // tokens of all self-attention items, one Q and one K/V GEMM pair over
  // the cross-attention items, the attention core per sequence (flash core
  // for all items at once; the materialising core per item that asks for
  // weights), one output GEMM over all tokens, then scatter.
  absl::Status Run(absl::Span<const AttentionInput> inputs,
                   absl::Span<const AttentionOutput> outputs) const {
    const AttentionConfig& c = config_;
    const int64_t d = c.d_model;
    const int64_t q_width = c.num_heads * c.head_dim;
    const int64_t kv_width = c.num_kv_heads * c.head_dim;
    const int64_t qkv_width = q_width + 2 * kv_width;
    const size_t n = inputs.size();

    // Plan: rows of every item in the shared buffers.
    std::array<ItemPlan, 1> one_plan;
    std::vector<ItemPlan> many_plans;
    if (n > 1) many_plans.resize(n);
    ItemPlan* plans = n > 1 ? many_plans.data() : one_plan.data();
    int64_t total_q = 0, self_rows = 0, cross_q = 0, cross_kv = 0;
    size_t self_items = 0, cross_items = 0;
    int64_t flash_seqs = 0;
    for (size_t i = 0; i < n; ++i) {
      const AttentionInput& in = inputs[i];
      ItemPlan& p = plans[i];
      p.self = in.key == in.query && in.value == in.query;
      p.q_tokens = in.batch * in.q_len;
      p.kv_tokens = in.batch * in.kv_len;
      p.q_row = total_q;
      total_q += p.q_tokens;
      if (p.self) {
        p.src_row = self_rows;
        self_rows += p.q_tokens;
        ++self_items;
      } else {
        p.src_row = cross_q;
        p.kv_row = cross_kv;
        cross_q += p.q_tokens;
        cross_kv += p.kv_tokens;
        ++cross_items;
      }
      if (outputs[i].weights == nullptr) {
        flash_seqs +=
            SplitsWindow(in, outputs[i])
                ? in.batch * internal::WindowSequenceCount(c.sliding_window,
                                                           in.q_len, in.kv_len)
                : in.batch;
      }
    }

    // Scratch: gathered inputs (only when several items share a GEMM),
    // projections, context, output rows, masks flags, flash sequences.
    const bool gather_self = self_items > 1;
    const bool gather_cross = cross_items > 1;
    const bool direct_out = n == 1;
    ScratchLayout layout;
    const size_t xs_at = layout.Add<float>(gather_self ? self_rows * d : 0);
    const size_t qkv_at = layout.Add<float>(self_rows * qkv_width);
    const size_t xq_at = layout.Add<float>(gather_cross ? cross_q * d : 0);
    const size_t xk_at = layout.Add<float>(gather_cross ? cross_kv * d : 0);
    const size_t xv_at = layout.Add<float>(gather_cross ? cross_kv * d : 0);
    const size_t cq_at = layout.Add<float>(cross_q * q_width);
    const size_t ck_at = layout.Add<float>(cross_kv * kv_width);
    const size_t cv_at = layout.Add<float>(cross_kv * kv_width);
    const size_t ctx_at = layout.Add<float>(total_q * q_width);
    const size_t y_at = layout.Add<float>(direct_out ? 0 : total_q * d);
    const size_t masked_at = layout.Add<uint8_t>(total_q);
    const size_t seqs_at = layout.Add<internal::FlashSequence>(flash_seqs);
    ScratchPool::Lease arena = pool_.Acquire();
    void* base = nullptr;
    ATTN_RETURN_IF_ERROR(
        internal::CallDnnl("allocating attention scratch", [&] {
          base = arena->Reserve(layout.bytes());
          return absl::OkStatus();
        }));
    auto at = [base](size_t offset) {
      return ScratchLayout::At<float>(base, offset);
    };
    float* qkv = at(qkv_at);
    float* cq = at(cq_at);
    float* ck = at(ck_at);
    float* cv = at(cv_at);
    float* ctx = at(ctx_at);
    float* y = direct_out ? outputs[0].output : at(y_at);
    uint8_t* row_masked = ScratchLayout::At<uint8_t>(base, masked_at);
    internal::FlashSequence* seqs =
        ScratchLayout::At<internal::FlashSequence>(base, seqs_at);

    // Projections.
    if (self_items > 0) {
      const float* xs = nullptr;
      if (gather_self) {
        float* dst = at(xs_at);
#pragma omp parallel for schedule(static) if (self_rows * d >= kParallelCopy)
        for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
          if (!plans[i].self) continue;
          std::memcpy(dst + plans[i].src_row * d, inputs[i].query,
                      sizeof(float) * plans[i].q_tokens * d);
        }
        xs = dst;
      } else {
        for (size_t i = 0; i < n; ++i) {
          if (plans[i].self) xs = inputs[i].query;
        }
      }
      ATTN_RETURN_IF_ERROR(qkv_proj_->Forward(xs, self_rows, qkv));
      // Rotary embedding of Q and K at positions 0 .. q_len - 1 of every
      // sequence, while the GEMM's output is in cache (only self-attention
      // items reach here on a RoPE layer: CheckInput).
      if (rope_.enabled()) {
        for (size_t i = 0; i < n; ++i) {
          if (!plans[i].self) continue;
          for (int64_t b = 0; b < inputs[i].batch; ++b) {
            float* row =
                qkv + (plans[i].src_row + b * inputs[i].q_len) * qkv_width;
            rope_.RotateRows(row, c.num_heads, row + q_width, c.num_kv_heads,
                             inputs[i].q_len, qkv_width, 0);
          }
        }
      }
    }
    if (cross_items > 0) {
      const float *xq = nullptr, *xk = nullptr, *xv = nullptr;
      if (gather_cross) {
        float* gq = at(xq_at);
        float* gk = at(xk_at);
        float* gv = at(xv_at);
#pragma omp parallel for schedule(static) if ((cross_q + 2 * cross_kv) * d >= \
                                              kParallelCopy)
        for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
          const ItemPlan& p = plans[i];
          if (p.self) continue;
          std::memcpy(gq + p.src_row * d, inputs[i].query,
                      sizeof(float) * p.q_tokens * d);
          std::memcpy(gk + p.kv_row * d, inputs[i].key,
                      sizeof(float) * p.kv_tokens * d);
          std::memcpy(gv + p.kv_row * d, inputs[i].value,
                      sizeof(float) * p.kv_tokens * d);
        }
        xq = gq;
        xk = gk;
        xv = gv;
      } else {
        for (size_t i = 0; i < n; ++i) {
          if (plans[i].self) continue;
          xq = inputs[i].query;
          xk = inputs[i].key;
          xv = inputs[i].value;
        }
      }
      ATTN_RETURN_IF_ERROR(q_proj_->Forward(xq, cross_q, cq));
      ATTN_RETURN_IF_ERROR(k_proj_->Forward(xk, cross_kv, ck));
      ATTN_RETURN_IF_ERROR(v_proj_->Forward(xv, cross_kv, cv));
    }

    // Attention core. Sliding windows: items with an explicit mask or
    // weights get the window baked into their mask; the others are split
    // into windowed flash sequences (internal/sliding_window.h).
    std::vector<AttentionInput> baked;
    std::vector<std::vector<uint8_t>> baked_bool;
    std::vector<std::vector<float>> baked_add;
    std::vector<int64_t> baked_index(c.sliding_window > 0 ? n : 0, -1);
    internal::WindowMasks window_masks(c.sliding_window);
    if (c.sliding_window > 0) {
      for (size_t i = 0; i < n; ++i) {
        if (inputs[i].mask_kind != MaskKind::kNone ||
            outputs[i].weights != nullptr) {
          baked_index[i] = static_cast<int64_t>(baked.size());
          baked.emplace_back();
        }
      }
      baked_bool.resize(baked.size());
      baked_add.resize(baked.size());
      for (size_t i = 0; i < n; ++i) {
        const int64_t bi = baked_index[i];
        if (bi < 0) continue;
        ATTN_RETURN_IF_ERROR(
            internal::CallDnnl("allocating the sliding-window mask", [&] {
              baked[bi] = internal::BakeWindowMask(
                  c.sliding_window, inputs[i], &baked_bool[bi], &baked_add[bi]);
              return absl::OkStatus();
            }));
      }
    }
    int64_t num_seqs = 0;
    for (size_t i = 0; i < n; ++i) {
      const AttentionInput& in = c.sliding_window > 0 && baked_index[i] >= 0
                                     ? baked[baked_index[i]]
                                     : inputs[i];
      const ItemPlan& p = plans[i];
      const float* q =
          p.self ? qkv + p.src_row * qkv_width : cq + p.src_row * q_width;
      const float* k = p.self ? qkv + p.src_row * qkv_width + q_width
                              : ck + p.kv_row * kv_width;
      const float* v = p.self ? k + kv_width : cv + p.kv_row * kv_width;
      const int64_t q_stride = p.self ? qkv_width : q_width;
      const int64_t kv_stride = p.self ? qkv_width : kv_width;
      float* item_ctx = ctx + p.q_row * q_width;
      uint8_t* item_masked = row_masked + p.q_row;
      if (outputs[i].weights != nullptr) {
        internal::MaskSpec mask;
        mask.causal = in.causal;
        mask.key_lengths = in.key_lengths;
        mask.kind = in.mask_kind;
        mask.mask = in.mask;
        mask.per_batch = in.mask_per_batch;
        ATTN_RETURN_IF_ERROR(core_.Forward(
            in.batch, in.q_len, in.kv_len, q, q_stride, k, v, kv_stride, mask,
            item_ctx, outputs[i].weights, item_masked));
        continue;
      }
      const bool split = SplitsWindow(in, outputs[i]);
      for (int64_t b = 0; b < in.batch; ++b) {
        internal::FlashSequence whole;
        internal::FlashSequence& s =
            split ? whole : *new (&seqs[num_seqs++]) internal::FlashSequence();
        s.q = q + b * in.q_len * q_stride;
        s.k = k + b * in.kv_len * kv_stride;
        s.v = v + b * in.kv_len * kv_stride;
        s.q_stride = q_stride;
        s.kv_stride = kv_stride;
        s.context = item_ctx + b * in.q_len * q_width;
        s.q_len = in.q_len;
        s.kv_len = in.kv_len;
        s.key_limit = in.key_lengths != nullptr ? in.key_lengths[b] : in.kv_len;
        s.causal = in.causal;
        s.mask_kind = in.mask_kind;
        if (in.mask_kind == MaskKind::kAdditive) {
          s.mask = static_cast<const float*>(in.mask) +
                   (in.mask_per_batch ? b * in.q_len * in.kv_len : 0);
        } else if (in.mask_kind == MaskKind::kBoolean) {
          s.mask = static_cast<const uint8_t*>(in.mask) +
                   (in.mask_per_batch ? b * in.q_len * in.kv_len : 0);
        }
        s.row_masked = item_masked + b * in.q_len;
        if (split) {
          const int64_t count = internal::WindowSequenceCount(
              c.sliding_window, in.q_len, in.kv_len);
          for (int64_t k = 0; k < count; ++k) {
            new (&seqs[num_seqs + k]) internal::FlashSequence();
          }
          num_seqs += internal::SplitWindow(whole, c.sliding_window, q_width,
                                            &window_masks, seqs + num_seqs);
        }
      }
    }
    ATTN_RETURN_IF_ERROR(flash_.Forward(absl::MakeConstSpan(seqs, num_seqs)));

    // Output projection over every token, then scatter.
    ATTN_RETURN_IF_ERROR(o_proj_->Forward(ctx, total_q, y));
#pragma omp parallel for schedule(static) if (n > 1 && \
                                              total_q * d >= kParallelCopy)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      const ItemPlan& p = plans[i];
      float* dst = outputs[i].output;
      if (!direct_out) {
        std::memcpy(dst, y + p.q_row * d, sizeof(float) * p.q_tokens * d);
      }
      // A fully masked query row is all zeros (the output bias is not
      // added).
      for (int64_t t = 0; t < p.q_tokens; ++t) {
        if (row_masked[p.q_row + t]) {
          std::fill(dst + t * d, dst + (t + 1) * d, 0.0f);
        }
      }
    }
    return absl::OkStatus();
  }

  // Whether an item of a sliding-window layer goes to the flash core as
  // windowed sequences (no explicit mask: the window is not baked).
  bool SplitsWindow(const AttentionInput& in,
                    const AttentionOutput& out) const {
    return config_.sliding_window > 0 && in.mask_kind == MaskKind::kNone &&
           out.weights == nullptr;
  }

  const AttentionConfig config_;
  dnnl::engine engine_;
  const std::unique_ptr<Linear> qkv_proj_;  // self-attention, fused
  const std::unique_ptr<Linear> q_proj_;    // cross-attention
  const std::unique_ptr<Linear> k_proj_;
  const std::unique_ptr<Linear> v_proj_;
  const std::unique_ptr<Linear> o_proj_;
  const AttentionCore core_;         // materialising; when weights requested
  const internal::FlashCore flash_;  // tiled online softmax; otherwise
  const internal::Rope rope_;        // disabled when rope_theta == 0
  // ForwardPaged's span: flash_'s vector ISA (null: scalar).
  const internal::DecodeSpanFn decode_span_;
  mutable ScratchPool pool_;  // per-call buffers
};

}  // namespace

absl::StatusOr<std::unique_ptr<MultiHeadAttention>> MultiHeadAttention::Create(
    const AttentionConfig& config, AttentionWeights weights) {
  absl::StatusOr<AttentionConfig> resolved = ResolveConfig(config);
  if (!resolved.ok()) return resolved.status();
  const AttentionConfig& c = *resolved;
  ATTN_RETURN_IF_ERROR(CheckWeights(c, weights));
  // A bad ATTN_KERNEL_ISA fails here, before any work (kernel_isa.h).
  ATTN_RETURN_IF_ERROR(
      internal::ChooseCore(c.compute_dtype, c.head_dim).status());

  dnnl::engine engine;
  ATTN_RETURN_IF_ERROR(
      internal::CallDnnl("creating the CPU engine", [&]() -> absl::Status {
        engine = dnnl::engine(dnnl::engine::kind::cpu, 0);
        return absl::OkStatus();
      }));

  const int64_t d = c.d_model;
  const int64_t q_width = c.num_heads * c.head_dim;
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  // Fused self-attention projection: rows [wq * scale; wk; wv], so one GEMM
  // yields token-major [Q | K | V]. The attention scale is folded into the
  // Q projection.
  std::vector<float> w_qkv;
  w_qkv.reserve(weights.wq.size() + weights.wk.size() + weights.wv.size());
  for (float w : weights.wq) w_qkv.push_back(w * c.scale);
  w_qkv.insert(w_qkv.end(), weights.wk.begin(), weights.wk.end());
  w_qkv.insert(w_qkv.end(), weights.wv.begin(), weights.wv.end());
  std::vector<float> b_qkv;
  if (!weights.bq.empty() || !weights.bk.empty() || !weights.bv.empty()) {
    b_qkv.assign(static_cast<size_t>(q_width + 2 * kv_width), 0.0f);
    for (size_t i = 0; i < weights.bq.size(); ++i) {
      b_qkv[i] = weights.bq[i] * c.scale;
    }
    std::copy(weights.bk.begin(), weights.bk.end(), b_qkv.begin() + q_width);
    std::copy(weights.bv.begin(), weights.bv.end(),
              b_qkv.begin() + q_width + kv_width);
  }
  auto qkv_proj = Linear::Create(engine, "fused QKV projection (wq, wk, wv)", d,
                                 q_width + 2 * kv_width, w_qkv, b_qkv, 1.0f,
                                 c.compute_dtype);
  if (!qkv_proj.ok()) return qkv_proj.status();
  w_qkv = std::vector<float>();
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
      c, engine, *std::move(qkv_proj), *std::move(q_proj), *std::move(k_proj),
      *std::move(v_proj), *std::move(o_proj)));
}

KvPoolLayout KvPoolLayoutFor(const AttentionConfig& config,
                             KvPoolLayout::Dtype dtype, int block_tokens) {
  KvPoolLayout layout;
  layout.block_tokens = block_tokens;
  layout.num_kv_heads = static_cast<int>(
      config.num_kv_heads != 0 ? config.num_kv_heads : config.num_heads);
  layout.head_dim = static_cast<int>(
      config.head_dim != 0
          ? config.head_dim
          : (config.num_heads != 0 ? config.d_model / config.num_heads : 0));
  layout.dtype = dtype;
  return layout;
}

absl::Status MultiHeadAttention::ForwardPaged(
    const float* /*x*/, absl::Span<const PagedSequence> /*seqs*/,
    const KvPool& /*pool*/, float* /*out*/) const {
  return absl::UnimplementedError(
      "this attention layer does not implement ForwardPaged (paged KV cache)");
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
