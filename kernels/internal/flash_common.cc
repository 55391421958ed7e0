// Portable parts of the flash core: masking of a score row, normalisation
// of the output rows, and the scalar unit (any CPU).
#include <algorithm>
#include <cmath>

#include "kernels/internal/flash_tiles.h"

namespace attn::kernels::internal::flash {

// Adds the explicit mask and the row limit to one score tile row (columns
// j0 .. j0 + width - 1): masked entries become -inf.
void MaskTileRow(const FlashSequence& s, int64_t i, int64_t j0, int64_t limit,
                 int64_t width, float* row) {
  const int64_t valid = std::clamp<int64_t>(limit - j0, 0, width);
  const int64_t offset = i * s.kv_len + j0;
  if (s.mask_kind == MaskKind::kAdditive) {
    const float* m = static_cast<const float*>(s.mask) + offset;
    for (int64_t c = 0; c < valid; ++c) row[c] += m[c];
  } else if (s.mask_kind == MaskKind::kBoolean) {
    const uint8_t* m = static_cast<const uint8_t*>(s.mask) + offset;
    for (int64_t c = 0; c < valid; ++c) row[c] = m[c] != 0 ? kNegInf : row[c];
  }
  for (int64_t c = valid; c < width; ++c) row[c] = kNegInf;
}

void ScalarUnit(const FlashSequence& s, int64_t h, int64_t g, int64_t i0,
                int64_t nq, int64_t hd, int64_t ctx_stride, float* row_buf,
                bool write_mask) {
  for (int64_t i = i0; i < i0 + nq; ++i) {
    const int64_t limit = RowLimit(s, i);
    const float* q = s.q + i * s.q_stride + h * hd;
    float* o = s.context + i * ctx_stride + h * hd;
    float mx = kNegInf;
    for (int64_t j = 0; j < limit; ++j) {
      const float* k = s.k + j * s.kv_stride + g * hd;
      float dot = 0.0f;
      for (int64_t d = 0; d < hd; ++d) dot += q[d] * k[d];
      if (s.mask_kind == MaskKind::kAdditive) {
        dot += static_cast<const float*>(s.mask)[i * s.kv_len + j];
      } else if (s.mask_kind == MaskKind::kBoolean &&
                 static_cast<const uint8_t*>(s.mask)[i * s.kv_len + j] != 0) {
        dot = kNegInf;
      }
      row_buf[j] = dot;
      mx = std::max(mx, dot);
    }
    std::fill(o, o + hd, 0.0f);
    const bool masked = mx == kNegInf;
    if (write_mask) s.row_masked[i] = masked ? 1 : 0;
    if (masked) continue;
    float sum = 0.0f;
    for (int64_t j = 0; j < limit; ++j) {
      const float p = std::exp(row_buf[j] - mx);
      sum += p;
      if (p == 0.0f) continue;
      const float* v = s.v + j * s.kv_stride + g * hd;
      for (int64_t d = 0; d < hd; ++d) o[d] += p * v[d];
    }
    const float inv = 1.0f / sum;
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
  }
}

}  // namespace attn::kernels::internal::flash
