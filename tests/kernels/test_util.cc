#include "tests/kernels/test_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>

#include "tests/kernels/reference_attention.h"

namespace attn::kernels::testing {

std::vector<float> RandomVector(std::mt19937& rng, size_t n, double stddev) {
  std::normal_distribution<float> dist(0.0f, static_cast<float>(stddev));
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

AttentionWeights RandomWeights(std::mt19937& rng, const AttentionConfig& config,
                               bool with_bias) {
  const int64_t d = config.d_model;
  const int64_t kvh =
      config.num_kv_heads == 0 ? config.num_heads : config.num_kv_heads;
  const int64_t dh =
      config.head_dim == 0 ? d / config.num_heads : config.head_dim;
  const int64_t q_out = config.num_heads * dh;
  const int64_t kv_out = kvh * dh;
  AttentionWeights w;
  w.wq = RandomVector(rng, q_out * d, 1.0 / std::sqrt(double(d)));
  w.wk = RandomVector(rng, kv_out * d, 1.0 / std::sqrt(double(d)));
  w.wv = RandomVector(rng, kv_out * d, 1.0 / std::sqrt(double(d)));
  w.wo = RandomVector(rng, d * q_out, 1.0 / std::sqrt(double(q_out)));
  if (with_bias) {
    w.bq = RandomVector(rng, q_out, 0.1);
    w.bk = RandomVector(rng, kv_out, 0.1);
    w.bv = RandomVector(rng, kv_out, 0.1);
    w.bo = RandomVector(rng, d, 0.1);
  }
  return w;
}

std::string Case::DebugString() const {
  std::ostringstream s;
  s << "d_model=" << config.d_model << " heads=" << config.num_heads
    << " kv_heads=" << config.num_kv_heads << " head_dim=" << config.head_dim
    << " scale=" << config.scale
    << " bf16=" << (config.compute_dtype == ComputeDType::kBFloat16)
    << " B=" << batch << " Sq=" << q_len << " Sk=" << kv_len
    << " self=" << self_attention << " causal=" << causal
    << " key_lengths=" << static_cast<int>(key_lengths)
    << " mask=" << static_cast<int>(mask_kind)
    << " per_batch=" << mask_per_batch
    << " fully_masked_row=" << mask_fully_masked_row << " bias=" << with_bias
    << " weights=" << return_weights << " rope_theta=" << config.rope_theta
    << " rope_style=" << static_cast<int>(config.rope_style)
    << " rope_dims=" << config.rope_dims << " window=" << config.sliding_window
    << " seed=" << seed;
  return s.str();
}

CaseData MakeCaseData(const Case& c) {
  std::mt19937 rng(c.seed);
  CaseData data;
  const int64_t d = c.config.d_model;
  data.weights = RandomWeights(rng, c.config, c.with_bias);
  data.query = RandomVector(rng, c.batch * c.q_len * d, 1.0);
  AttentionInput& in = data.input;
  in.batch = c.batch;
  in.q_len = c.q_len;
  in.kv_len = c.kv_len;
  in.query = data.query.data();
  if (c.self_attention) {
    in.key = in.value = data.query.data();
  } else {
    data.key = RandomVector(rng, c.batch * c.kv_len * d, 1.0);
    data.value = RandomVector(rng, c.batch * c.kv_len * d, 1.0);
    in.key = data.key.data();
    in.value = data.value.data();
  }
  in.causal = c.causal;
  if (c.key_lengths != KeyLengths::kNone) {
    std::uniform_int_distribution<int32_t> len(0, c.kv_len);
    for (int64_t b = 0; b < c.batch; ++b) data.key_lengths.push_back(len(rng));
    if (c.key_lengths == KeyLengths::kWithZero) data.key_lengths[0] = 0;
    if (c.batch > 1) data.key_lengths[c.batch - 1] = c.kv_len;
    in.key_lengths = data.key_lengths.data();
  }
  const int64_t mask_size =
      (c.mask_per_batch ? c.batch : 1) * c.q_len * c.kv_len;
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  // The masked query row (if any): the last row of the first mask slice.
  const int64_t masked_row = c.q_len - 1;
  if (c.mask_kind == MaskKind::kAdditive) {
    data.additive_mask.resize(mask_size);
    for (int64_t m = 0; m < mask_size; ++m) {
      const float u = uniform(rng);
      data.additive_mask[m] = u < 0.2f ? -std::numeric_limits<float>::infinity()
                                       : 4.0f * (u - 0.6f);
    }
    if (c.mask_fully_masked_row) {
      std::fill_n(data.additive_mask.begin() + masked_row * c.kv_len, c.kv_len,
                  -std::numeric_limits<float>::infinity());
    }
    in.mask = data.additive_mask.data();
  } else if (c.mask_kind == MaskKind::kBoolean) {
    data.bool_mask.resize(mask_size);
    for (int64_t m = 0; m < mask_size; ++m) {
      // Nonzero values other than 1 must also mask.
      data.bool_mask[m] = uniform(rng) < 0.3f ? (m % 2 ? 1 : 255) : 0;
    }
    if (c.mask_fully_masked_row) {
      std::fill_n(data.bool_mask.begin() + masked_row * c.kv_len, c.kv_len, 1);
    }
    in.mask = data.bool_mask.data();
  }
  in.mask_kind = c.mask_kind;
  in.mask_per_batch = c.mask_per_batch;
  return data;
}

Comparison RunAndCompare(const Case& c, const CaseData& data,
                         const MultiHeadAttention* mha) {
  Comparison result;
  std::unique_ptr<MultiHeadAttention> owned;
  if (mha == nullptr) {
    auto created = MultiHeadAttention::Create(c.config, data.weights);
    if (!created.ok()) {
      result.error = created.status().ToString();
      return result;
    }
    owned = *std::move(created);
    mha = owned.get();
  }
  const int64_t heads = c.config.num_heads;
  std::vector<float> output(c.batch * c.q_len * c.config.d_model,
                            std::numeric_limits<float>::quiet_NaN());
  std::vector<float> weights;
  AttentionOutput out;
  out.output = output.data();
  if (c.return_weights) {
    weights.assign(c.batch * heads * c.q_len * c.kv_len,
                   std::numeric_limits<float>::quiet_NaN());
    out.weights = weights.data();
  }
  absl::Status status = mha->Forward(data.input, out);
  if (!status.ok()) {
    result.error = status.ToString();
    return result;
  }
  const reference::ReferenceResult ref =
      reference::ReferenceAttention(c.config, data.weights, data.input);
  for (size_t i = 0; i < output.size(); ++i) {
    if (!std::isfinite(output[i])) result.has_non_finite = true;
    const double err = std::abs(double(output[i]) - ref.output[i]);
    result.max_output_error = std::max(result.max_output_error, err);
    result.max_output_scaled_error = std::max(
        result.max_output_scaled_error, err / (1.0 + std::abs(ref.output[i])));
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!std::isfinite(weights[i])) result.has_non_finite = true;
    result.max_weights_error =
        std::max(result.max_weights_error,
                 std::abs(double(weights[i]) - ref.weights[i]));
  }
  // NaN differences compare false above; count them as failures.
  if (result.has_non_finite) {
    result.max_output_error = std::numeric_limits<double>::infinity();
    result.max_output_scaled_error = std::numeric_limits<double>::infinity();
  }
  return result;
}

}  // namespace attn::kernels::testing
