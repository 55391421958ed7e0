#include "kernels/internal/rope.h"

#include <cmath>
#include <vector>

namespace attn::kernels::internal {

Rope::Rope(const AttentionConfig& config)
    : interleaved_(config.rope_style ==
                   AttentionConfig::RopeStyle::kInterleaved),
      head_dim_(config.head_dim) {
  if (config.rope_theta == 0.0) return;
  const int64_t dims =
      config.rope_dims == 0 ? config.head_dim : config.rope_dims;
  inv_freq_.resize(static_cast<size_t>(dims / 2));
  for (int64_t i = 0; i < dims / 2; ++i) {
    inv_freq_[i] = std::pow(config.rope_theta, -2.0 * static_cast<double>(i) /
                                                   static_cast<double>(dims));
  }
}

void Rope::Angles(int64_t position, float* cs) const {
  const int64_t n = half();
  const double p = static_cast<double>(position);
  for (int64_t i = 0; i < n; ++i) {
    const double angle = p * inv_freq_[i];
    cs[i] = static_cast<float>(std::cos(angle));
    cs[n + i] = static_cast<float>(std::sin(angle));
  }
}

void Rope::RotateTo(const float* cs, const float* in, float* out) const {
  const int64_t n = half();
  const float* c = cs;
  const float* s = cs + n;
  if (interleaved_) {
    for (int64_t i = 0; i < n; ++i) {
      const float x0 = in[2 * i], x1 = in[2 * i + 1];
      out[2 * i] = x0 * c[i] - x1 * s[i];
      out[2 * i + 1] = x1 * c[i] + x0 * s[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float x0 = in[i], x1 = in[i + n];
      out[i] = x0 * c[i] - x1 * s[i];
      out[i + n] = x1 * c[i] + x0 * s[i];
    }
  }
  if (out != in) {
    for (int64_t d = 2 * n; d < head_dim_; ++d) out[d] = in[d];
  }
}

void Rope::Rotate(const float* cs, float* row, int64_t heads) const {
  for (int64_t h = 0; h < heads; ++h) {
    float* x = row + h * head_dim_;
    RotateTo(cs, x, x);
  }
}

void Rope::RotateRows(float* q, int64_t q_heads, float* k, int64_t k_heads,
                      int64_t rows, int64_t stride,
                      int64_t first_position) const {
  if (!enabled()) return;
#pragma omp parallel if (rows >= 64)
  {
    std::vector<float> cs(static_cast<size_t>(2 * half()));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      Angles(first_position + r, cs.data());
      Rotate(cs.data(), q + r * stride, q_heads);
      Rotate(cs.data(), k + r * stride, k_heads);
    }
  }
}

}  // namespace attn::kernels::internal
