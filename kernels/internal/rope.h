// Rotary position embedding (RoPE) of a token's heads, in place, at an
// absolute position, with the frequencies of Hugging Face Llama:
//   inv_freq[i] = theta^(-2i / rope_dims)      (i < rope_dims / 2)
//   angle = position * inv_freq[i]             (computed in double)
// and the pairs of dimensions of the chosen style rotated by angle:
//   kHalf:        (i, i + rope_dims / 2)   (rotate_half)
//   kInterleaved: (2i, 2i + 1)             (GPT-J / original Meta)
// Dimensions at or past rope_dims are left as they are (partial rotary).
// The angles are computed once per token and shared by all its heads; the
// callers rotate projected rows while they are in cache (attention.cc right
// after the QKV GEMM; paged_decode.cc while K is written into the pool and
// Q is read).
// Internal: not part of the public API.
//
// Thread-safety: immutable after construction; every method is const and
// may be called concurrently.
#ifndef ATTNSERVE_KERNELS_INTERNAL_ROPE_H_
#define ATTNSERVE_KERNELS_INTERNAL_ROPE_H_

#include <cstdint>
#include <vector>

#include "kernels/attention.h"

namespace attn::kernels::internal {

class Rope {
 public:
  // Disabled (enabled() false) when config.rope_theta == 0. REQUIRES: a
  // resolved config (rope_dims even, in [2, head_dim]).
  explicit Rope(const AttentionConfig& config);

  bool enabled() const { return !inv_freq_.empty(); }
  int64_t half() const { return static_cast<int64_t>(inv_freq_.size()); }

  // Writes cos and sin of the angles of `position` into cs[0 .. half) and
  // cs[half .. 2 half).
  void Angles(int64_t position, float* cs) const;

  // Rotates one head (head_dim floats) of `in` into `out` (may alias) with
  // the angles from Angles().
  void RotateTo(const float* cs, const float* in, float* out) const;

  // Rotates `heads` consecutive heads of `row` in place.
  void Rotate(const float* cs, float* row, int64_t heads) const;

  // For r < rows: rotates the q_heads heads at q + r * stride and the
  // k_heads heads at k + r * stride at position first_position + r, in
  // place, on the caller's OpenMP team when rows are many.
  void RotateRows(float* q, int64_t q_heads, float* k, int64_t k_heads,
                  int64_t rows, int64_t stride, int64_t first_position) const;

 private:
  std::vector<double> inv_freq_;  // [rope_dims / 2]
  bool interleaved_ = false;
  int64_t head_dim_ = 0;
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_ROPE_H_
