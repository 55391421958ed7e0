#include "tests/kernels/reference_attention.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace attn::reference {
namespace {

using kernels::AttentionConfig;
using kernels::AttentionInput;
using kernels::AttentionWeights;
using kernels::MaskKind;

// y[t, o] = sum_c x[t, c] * w[o, c] + b[o] for t < tokens.
std::vector<double> Project(const float* x, int64_t tokens, int64_t in,
                            int64_t out, const std::vector<float>& w,
                            const std::vector<float>& b) {
  std::vector<double> y(tokens * out);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.empty() ? 0.0 : b[o];
      for (int64_t c = 0; c < in; ++c) {
        acc += static_cast<double>(x[t * in + c]) * w[o * in + c];
      }
      y[t * out + o] = acc;
    }
  }
  return y;
}

// Rotary embedding in double, straight from the definition: the pair
// (x_a, x_b) of frequency i is rotated by position * theta^(-2i / dims);
// pairs are (i, i + dims/2) (rotate_half) or (2i, 2i + 1) (interleaved).
void Rotate(const AttentionConfig& c, int64_t dh, int64_t heads, int64_t tokens,
            int64_t seq, std::vector<double>* x) {
  if (c.rope_theta == 0.0) return;
  const int64_t dims = c.rope_dims == 0 ? dh : c.rope_dims;
  const bool interleaved =
      c.rope_style == AttentionConfig::RopeStyle::kInterleaved;
  for (int64_t t = 0; t < tokens; ++t) {
    const double pos = static_cast<double>(t % seq);
    for (int64_t h = 0; h < heads; ++h) {
      double* row = x->data() + (t * heads + h) * dh;
      for (int64_t i = 0; i < dims / 2; ++i) {
        const double angle =
            pos * std::pow(c.rope_theta, -2.0 * static_cast<double>(i) /
                                             static_cast<double>(dims));
        const int64_t a = interleaved ? 2 * i : i;
        const int64_t b = interleaved ? 2 * i + 1 : i + dims / 2;
        const double xa = row[a], xb = row[b];
        row[a] = xa * std::cos(angle) - xb * std::sin(angle);
        row[b] = xb * std::cos(angle) + xa * std::sin(angle);
      }
    }
  }
}

}  // namespace

ReferenceResult ReferenceAttention(const AttentionConfig& config,
                                   const AttentionWeights& weights,
                                   const AttentionInput& input) {
  const int64_t d = config.d_model;
  const int64_t heads = config.num_heads;
  const int64_t kv_heads =
      config.num_kv_heads == 0 ? heads : config.num_kv_heads;
  const int64_t dh = config.head_dim == 0 ? d / heads : config.head_dim;
  const double scale = config.scale == 0.0f
                           ? 1.0 / std::sqrt(static_cast<double>(dh))
                           : static_cast<double>(config.scale);
  const int64_t batch = input.batch;
  const int64_t sq = input.q_len;
  const int64_t sk = input.kv_len;
  const int64_t heads_per_kv = heads / kv_heads;

  std::vector<double> q =
      Project(input.query, batch * sq, d, heads * dh, weights.wq, weights.bq);
  std::vector<double> k =
      Project(input.key, batch * sk, d, kv_heads * dh, weights.wk, weights.bk);
  Rotate(config, dh, heads, batch * sq, sq, &q);
  Rotate(config, dh, kv_heads, batch * sk, sk, &k);
  const std::vector<double> v = Project(input.value, batch * sk, d,
                                        kv_heads * dh, weights.wv, weights.bv);

  ReferenceResult result;
  result.weights.assign(batch * heads * sq * sk, 0.0);
  std::vector<double> context(batch * sq * heads * dh, 0.0);
  std::vector<bool> row_fully_masked(batch * sq, false);

  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / heads_per_kv;
      for (int64_t i = 0; i < sq; ++i) {
        std::vector<double> score(sk, 0.0);
        std::vector<bool> allowed(sk, true);
        for (int64_t j = 0; j < sk; ++j) {
          if (input.causal && j > i + (sk - sq)) allowed[j] = false;
          if (config.sliding_window > 0 &&
              j <= i + (sk - sq) - config.sliding_window) {
            allowed[j] = false;
          }
          if (input.key_lengths != nullptr && j >= input.key_lengths[b]) {
            allowed[j] = false;
          }
          const int64_t m =
              (input.mask_per_batch ? b * sq * sk : 0) + i * sk + j;
          double additive = 0.0;
          if (input.mask_kind == MaskKind::kBoolean &&
              static_cast<const uint8_t*>(input.mask)[m] != 0) {
            allowed[j] = false;
          }
          if (input.mask_kind == MaskKind::kAdditive) {
            additive = static_cast<const float*>(input.mask)[m];
            if (std::isinf(additive) && additive < 0) allowed[j] = false;
          }
          double dot = 0.0;
          for (int64_t e = 0; e < dh; ++e) {
            dot += q[(b * sq + i) * heads * dh + h * dh + e] *
                   k[(b * sk + j) * kv_heads * dh + g * dh + e];
          }
          score[j] = dot * scale + additive;
        }
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < sk; ++j) {
          if (allowed[j] && score[j] > max_score) max_score = score[j];
        }
        if (std::isinf(max_score)) {  // every key masked: zeros
          row_fully_masked[b * sq + i] = true;
          continue;
        }
        double sum = 0.0;
        std::vector<double> p(sk, 0.0);
        for (int64_t j = 0; j < sk; ++j) {
          if (allowed[j]) {
            p[j] = std::exp(score[j] - max_score);
            sum += p[j];
          }
        }
        for (int64_t j = 0; j < sk; ++j) {
          p[j] /= sum;
          result.weights[((b * heads + h) * sq + i) * sk + j] = p[j];
          for (int64_t e = 0; e < dh; ++e) {
            context[(b * sq + i) * heads * dh + h * dh + e] +=
                p[j] * v[(b * sk + j) * kv_heads * dh + g * dh + e];
          }
        }
      }
    }
  }

  result.output.assign(batch * sq * d, 0.0);
  for (int64_t t = 0; t < batch * sq; ++t) {
    if (row_fully_masked[t]) continue;
    for (int64_t c = 0; c < d; ++c) {
      double acc = weights.bo.empty() ? 0.0 : weights.bo[c];
      for (int64_t o = 0; o < heads * dh; ++o) {
        acc += context[t * heads * dh + o] * weights.wo[c * heads * dh + o];
      }
      result.output[t * d + c] = acc;
    }
  }
  return result;
}

}  // namespace attn::reference
