// Multi-head scaled dot-product attention on oneDNN (CPU, fp32/bf16).
//
//   Q = xq·Wqᵀ + bq, K = xk·Wkᵀ + bk, V = xv·Wvᵀ + bv     (per token)
//   O_h = softmax(Q_h·K_gᵀ · scale + mask) · V_g             (per head h,
//                                                              g = h / (H/KVH))
//   y = concat_h(O_h)·Woᵀ + bo
//
// Usage:
//   AttentionConfig config{.d_model = 256, .num_heads = 4};
//   auto mha = MultiHeadAttention::Create(config, std::move(weights));
//   if (!mha.ok()) ...;
//   AttentionInput in; in.batch = 1; in.q_len = 16; in.kv_len = 16;
//   in.query = in.key = in.value = x.data();
//   std::vector<float> y(16 * 256);
//   absl::Status s = (*mha)->Forward(in, AttentionOutput{y.data()});
//
// This library knows nothing of gRPC, protobuf or Prometheus: it takes plain
// pointers and shapes and reports errors as absl::Status.
#ifndef ATTNSERVE_KERNELS_ATTENTION_H_
#define ATTNSERVE_KERNELS_ATTENTION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/paged_attention.h"

namespace attn::kernels {

// Precision of the GEMMs. Accumulation and softmax are always fp32.
enum class ComputeDType { kFloat32, kBFloat16 };

// Shape and numerics of one attention layer.
struct AttentionConfig {
  // Width of the model (input and output features). REQUIRES: > 0.
  int64_t d_model = 0;
  // Number of query heads. REQUIRES: > 0.
  int64_t num_heads = 0;
  // Number of key/value heads. 0 means num_heads. REQUIRES: divides num_heads.
  int64_t num_kv_heads = 0;
  // Width of one head. 0 means d_model / num_heads (which must then divide).
  int64_t head_dim = 0;
  // Score scale. 0 means 1/sqrt(head_dim).
  float scale = 0.0f;
  ComputeDType compute_dtype = ComputeDType::kFloat32;
  // Rotary position embedding of Q and K (after projection, at absolute
  // positions): 0 means none; otherwise the base theta (Llama: 10000).
  // REQUIRES: finite, >= 0.
  double rope_theta = 0.0;
  // How dimensions pair up for the rotation.
  enum class RopeStyle {
    kHalf,         // (d, d + rope_dims/2): Hugging Face rotate_half
    kInterleaved,  // (2i, 2i + 1): GPT-J / original Meta
  };
  RopeStyle rope_style = RopeStyle::kHalf;
  // Leading dimensions of each head that are rotated; 0 means head_dim.
  // REQUIRES: even, <= head_dim.
  int64_t rope_dims = 0;
  // 0: no window. Otherwise query position i attends keys j with
  // i - sliding_window < j <= i; Forward then REQUIRES causal.
  int64_t sliding_window = 0;
};

// The pool layout for `config`'s KV heads and head width.
KvPoolLayout KvPoolLayoutFor(const AttentionConfig& config,
                             KvPoolLayout::Dtype dtype, int block_tokens = 16);

// Weights of one layer in PyTorch's layout: Linear weights are
// [out_features, in_features], row-major, fp32 (callers convert bf16/f16 files
// before). Biases may be empty (no bias).
struct AttentionWeights {
  std::vector<float> wq;  // [num_heads * head_dim, d_model]
  std::vector<float> wk;  // [num_kv_heads * head_dim, d_model]
  std::vector<float> wv;  // [num_kv_heads * head_dim, d_model]
  std::vector<float> wo;  // [d_model, num_heads * head_dim]
  std::vector<float> bq;  // [num_heads * head_dim] or empty
  std::vector<float> bk;  // [num_kv_heads * head_dim] or empty
  std::vector<float> bv;  // [num_kv_heads * head_dim] or empty
  std::vector<float> bo;  // [d_model] or empty
};

enum class MaskKind {
  kNone,
  // float values added to the scaled scores (-inf masks out).
  kAdditive,
  // uint8 values: nonzero means "masked out" (PyTorch nn.MultiheadAttention).
  kBoolean,
};

// One forward call: `batch` sequences of equal query length and equal key
// length. All pointers are borrowed for the duration of Forward().
struct AttentionInput {
  int64_t batch = 1;
  int64_t q_len = 0;             // Sq
  int64_t kv_len = 0;            // Sk
  const float* query = nullptr;  // [batch, q_len, d_model]
  // [batch, kv_len, d_model]. May alias `query` (self-attention); then
  // kv_len == q_len.
  const float* key = nullptr;
  const float* value = nullptr;  // [batch, kv_len, d_model]; may alias.
  // Position i attends to keys j <= i + (kv_len - q_len).
  bool causal = false;
  // nullptr, or [batch] lengths in [0, kv_len]: keys j >= length are masked.
  const int32_t* key_lengths = nullptr;
  MaskKind mask_kind = MaskKind::kNone;
  // const float* (kAdditive) or const uint8_t* (kBoolean), shaped
  // [q_len, kv_len] if !mask_per_batch else [batch, q_len, kv_len].
  const void* mask = nullptr;
  bool mask_per_batch = false;
};

struct AttentionOutput {
  float* output = nullptr;  // [batch, q_len, d_model]. REQUIRED.
  // nullptr, or [batch, num_heads, q_len, kv_len] softmax weights.
  float* weights = nullptr;
};

// A loaded attention layer. Weights are converted and laid out for oneDNN
// once, in Create(); oneDNN primitives are created once per shape and cached.
//
// Thread-safety: Forward() is const and may be called concurrently from
// several threads (the primitive cache is internally synchronized; scratch
// buffers are per call). Each call runs on omp_get_max_threads() OpenMP
// threads of the calling thread (set it with omp_set_num_threads; it may
// change between calls: primitives are cached per shape and thread count).
class MultiHeadAttention {
 public:
  // Validates `config` against the weight sizes. Errors: INVALID_ARGUMENT
  // naming the inconsistent field.
  static absl::StatusOr<std::unique_ptr<MultiHeadAttention>> Create(
      const AttentionConfig& config, AttentionWeights weights);

  virtual ~MultiHeadAttention() = default;

  // Computes `out` for `in`. A query row whose keys are all masked yields
  // zero output (and zero weights), never NaN. Errors: INVALID_ARGUMENT for
  // inconsistent shapes/pointers; INTERNAL if oneDNN fails.
  virtual absl::Status Forward(const AttentionInput& in,
                               const AttentionOutput& out) const = 0;

  // Computes several independent requests in one call (dynamic batching):
  // the result for item i is the same as Forward(inputs[i], outputs[i]),
  // within fp32 rounding. Items may differ in batch, q_len, kv_len, masks and
  // causality. The default implementation calls Forward() per item;
  // implementations may run the projections once over all tokens of all
  // items (ragged, no padding). REQUIRES: inputs.size() == outputs.size().
  // Errors: as Forward(), naming the item index; nothing is guaranteed
  // about any output when an error is returned.
  virtual absl::Status ForwardBatch(
      absl::Span<const AttentionInput> inputs,
      absl::Span<const AttentionOutput> outputs) const;

  // Incremental attention over a paged KV cache (kernels/paged_attention.h):
  // projects Q, K, V of the new tokens of every sequence (rows of `x`, in
  // `seqs` order: [sum new_tokens, d_model]), applies the rotary embedding
  // at absolute positions start_position.., writes K and V of the new tokens
  // into the sequence's pool blocks, then attends each new query causally
  // over its sequence's cached and new keys (within sliding_window) and
  // applies the output projection into `out` ([sum new_tokens, d_model]).
  // The result for a sequence equals the last new_tokens rows of a causal
  // self-attention Forward over its whole prefix (within rounding, and the
  // bf16 rounding of a bf16 pool). Errors: INVALID_ARGUMENT for a pool
  // layout that does not match the layer, too few blocks, a block id out of
  // range, or bad positions/pointers (nothing is written then); INTERNAL if
  // oneDNN fails (then the new tokens' slots may hold garbage; the cached
  // tokens are never modified). The default returns UNIMPLEMENTED.
  virtual absl::Status ForwardPaged(const float* x,
                                    absl::Span<const PagedSequence> seqs,
                                    const KvPool& pool, float* out) const;

  // The resolved configuration (defaults filled in).
  virtual const AttentionConfig& config() const = 0;

  // Which implementation runs on this CPU, for logs and GetModel, e.g.
  // "core avx512, projections bf16 (oneDNN)", "core scalar, projections
  // bf16 emulated on fp32 GEMMs (no AVX-512)" or, for a bf16 layer on an
  // AVX512-BF16 CPU without AMX, "core avx512_bf16 from 128 keys, avx512
  // below (calibrated: ...), projections bf16 (oneDNN)". Default: "".
  virtual std::string ImplementationSummary() const { return ""; }

 protected:
  MultiHeadAttention() = default;
};

}  // namespace attn::kernels

#endif  // ATTNSERVE_KERNELS_ATTENTION_H_
