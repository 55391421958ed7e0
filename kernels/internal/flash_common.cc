// Portable parts of the flash core: masking of score tiles, packing of
// fp32 keys and values, and the scalar unit (any CPU).
#include <algorithm>
#include <cmath>
#include <cstring>

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

void MaskColumnsExplicit(const FlashSequence& s, int64_t i0, int64_t nq,
                         int64_t j0, int64_t nk, const ThreadTiles& t) {
  if (s.mask_kind != MaskKind::kNone) {
    for (int64_t r = 0; r < nq; ++r) {
      const int64_t valid = std::clamp<int64_t>(t.limit[r] - j0, 0, nk);
      const int64_t offset = (i0 + r) * s.kv_len + j0;
      float* col = t.s + r;
      if (s.mask_kind == MaskKind::kAdditive) {
        const float* m = static_cast<const float*>(s.mask) + offset;
        for (int64_t j = 0; j < valid; ++j) col[j * BQ] += m[j];
      } else {
        const uint8_t* m = static_cast<const uint8_t*>(s.mask) + offset;
        for (int64_t j = 0; j < valid; ++j) {
          if (m[j] != 0) col[j * BQ] = kNegInf;
        }
      }
    }
  }
}

// Measured on the development machine: packing pays from about 1k queries
// (seq 4096 causal +15%), and costs up to 10% at seq 512.
bool PackF32(const FlashSequence& s) { return s.q_len > 1024; }

void PackF32Block(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                  float* k_rows, float* v_rows) {
  const int64_t j0 = kb * BK;
  const int64_t nk = std::min(BK, s.kv_len - j0);
  for (int64_t c = 0; c < nk; ++c) {
    const int64_t at = (j0 + c) * s.kv_stride + g * hd;
    std::memcpy(k_rows + c * hd, s.k + at, hd * sizeof(float));
    std::memcpy(v_rows + c * hd, s.v + at, hd * sizeof(float));
  }
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
