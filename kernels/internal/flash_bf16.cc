// The vdpbf16ps unit of the flash core (bf16 layers,
// ATTN_KERNEL_ISA=avx512_bf16), its bf16 packing of K and V and its row-wise
// online softmax.
// x86 only; other CPUs link flash_no_x86.cc and run the scalar unit.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/internal/flash_simd.h"
#include "kernels/internal/flash_tiles.h"

ATTN_FLASH_TARGET_BEGIN(ATTN_FLASH_AVX512_BF16)

namespace attn::kernels::internal::flash {
namespace {

inline int32_t Word(const uint16_t* p) {
  int32_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// s[R][BK] = q16[R][hdp] . kp, kp packed [hdp/2][BK][2] (bf16).
template <int R, int NC>
void QkBf16(const uint16_t* q16, int64_t hdp, const uint16_t* kp, float* s) {
  __m512 acc[R][NC];
  ZeroRows<R, NC>(acc);
  for (int64_t dp = 0; dp < hdp / 2; ++dp) {
    const uint16_t* kd = kp + dp * BK * 2;
    __m512bh kv[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      kv[c] = (__m512bh)_mm512_load_si512(kd + 32 * c);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh b =
          (__m512bh)_mm512_set1_epi32(Word(q16 + r * hdp + 2 * dp));
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c)
        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], b, kv[c]);
    }
  }
  StoreRows<R, NC>(acc, __mmask16(0xFFFF), s, BK);
}

// As PvF32 with bf16 p16[R][BK] and vp packed [BK/2][hd][2] (the caller
// offsets vp to the column chunk); `pairs` key pairs.
template <int R, int NV>
void PvBf16(const uint16_t* p16, int64_t pairs, const uint16_t* vp, int64_t hd,
            float* o, int64_t o_stride, const float* alpha, __mmask16 last) {
  __m512 acc[R][NV];
  LoadRescaled<R, NV>(o, o_stride, alpha, last, acc);
  for (int64_t jp = 0; jp < pairs; ++jp) {
    __m512bh vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = c == NV - 1 ? last : __mmask16(0xFFFF);
      vv[c] =
          (__m512bh)_mm512_maskz_loadu_epi32(m, vp + (jp * hd + 16 * c) * 2);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh b =
          (__m512bh)_mm512_set1_epi32(Word(p16 + r * BK + 2 * jp));
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c)
        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], b, vv[c]);
    }
  }
  StoreRows<R, NV>(acc, last, o, o_stride);
}

using QkBf16Fn = void (*)(const uint16_t*, int64_t, const uint16_t*, float*);
using PvBf16Fn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t,
                          float*, int64_t, const float*, __mmask16);

#define ATTN_ROW(K, r) \
  { K<r, 1>, K<r, 2>, K<r, 3>, K<r, 4> }
constexpr QkBf16Fn kQkBf16[kRowsPerKernel][4] = {
    ATTN_ROW(QkBf16, 1), ATTN_ROW(QkBf16, 2), ATTN_ROW(QkBf16, 3),
    ATTN_ROW(QkBf16, 4), ATTN_ROW(QkBf16, 5), ATTN_ROW(QkBf16, 6)};
constexpr PvBf16Fn kPvBf16[kRowsPerKernel][4] = {
    ATTN_ROW(PvBf16, 1), ATTN_ROW(PvBf16, 2), ATTN_ROW(PvBf16, 3),
    ATTN_ROW(PvBf16, 4), ATTN_ROW(PvBf16, 5), ATTN_ROW(PvBf16, 6)};
#undef ATTN_ROW

// Online-softmax step for one row of nc score vectors: updates m and l,
// returns the rescale factor of the previous output and writes the
// probabilities to p16 (bf16).
float SoftmaxRow(const float* row, int nc, float* m, float* l, uint16_t* p16) {
  __m512 v[4];
  __m512 vmax = _mm512_set1_ps(kNegInf);
  for (int c = 0; c < nc; ++c) {
    v[c] = _mm512_load_ps(row + 16 * c);
    vmax = _mm512_max_ps(vmax, v[c]);
  }
  const float mx = _mm512_reduce_max_ps(vmax);
  const float m_new = std::max(*m, mx);
  if (m_new == kNegInf) {  // nothing attended yet
    std::memset(p16, 0, 16 * nc * sizeof(uint16_t));
    return 1.0f;
  }
  const float alpha = std::exp(*m - m_new);  // 0 when *m is -inf
  const __m512 mn = _mm512_set1_ps(m_new);
  __m512 vsum = _mm512_setzero_ps();
  for (int c = 0; c < nc; ++c) {
    v[c] = Exp512(_mm512_sub_ps(v[c], mn));
    vsum = _mm512_add_ps(vsum, v[c]);
  }
  *l = *l * alpha + _mm512_reduce_add_ps(vsum);
  *m = m_new;
  for (int c = 0; c < nc; c += 2) {
    const __m512 hi = c + 1 < nc ? v[c + 1] : _mm512_setzero_ps();
    _mm512_storeu_si512(p16 + 16 * c, (__m512i)_mm512_cvtne2ps_pbh(hi, v[c]));
  }
  return alpha;
}

}  // namespace

void PackBf16Block(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                   uint16_t* k_out, uint16_t* v_out) {
  const int64_t j0 = kb * BK;
  const int64_t nk = std::min(BK, s.kv_len - j0);
  const int64_t hdp = (hd + 1) / 2 * 2;
  uint16_t* kp = k_out;
  // Whole 32-key chunks; the pad keys are zero (P.V reads key pairs).
  const int64_t width = std::min(BK, CeilDiv(nk, 32) * 32);
  if (hd % 32 == 0) {
    // Vectorised: K in 16-key x 16-pair blocks of 32-bit words (a pair of
    // bf16 dimensions), transposed in registers to word (d/2)*BK + c; V as
    // key pairs interleaved per dimension with one word permute.
    float* kw = reinterpret_cast<float*>(k_out);
    for (int64_t c0 = 0; c0 < width; c0 += 16) {
      for (int64_t d = 0; d < hd; d += 32) {
        __m512 rows[16];
        for (int c = 0; c < 16; ++c) {
          const float* k = s.k + (j0 + c0 + c) * s.kv_stride + g * hd + d;
          rows[c] = c0 + c < nk
                        ? (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + 16),
                                                      _mm512_loadu_ps(k))
                        : _mm512_setzero_ps();
        }
        Transpose16x16(rows, 16, kw + (d / 2) * BK + c0, BK);
      }
    }
    const __m512i v_perm = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
        6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t c = 0; c < width; c += 2) {
      const float* v0 = s.v + (j0 + c) * s.kv_stride + g * hd;
      const float* v1 = v0 + s.kv_stride;
      uint16_t* out = v_out + (c / 2) * hd * 2;
      for (int64_t d = 0; d < hd; d += 16) {
        const __m512 lo = c < nk ? _mm512_loadu_ps(v0 + d) : zero;
        const __m512 hi = c + 1 < nk ? _mm512_loadu_ps(v1 + d) : zero;
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512(out + d * 2,
                            _mm512_permutexvar_epi16(v_perm, both));
      }
    }
    return;
  }
  for (int64_t c = 0; c < width; ++c) {
    const float* k = s.k + (j0 + c) * s.kv_stride + g * hd;
    const float* v = s.v + (j0 + c) * s.kv_stride + g * hd;
    for (int64_t d = 0; d < hdp; ++d) {
      kp[((d / 2) * BK + c) * 2 + d % 2] =
          (c < nk && d < hd) ? ToBf16(k[d]) : uint16_t{0};
    }
    for (int64_t d = 0; d < hd; ++d) {
      v_out[((c / 2) * hd + d) * 2 + c % 2] =
          c < nk ? ToBf16(v[d]) : uint16_t{0};
    }
  }
}

// One unit on the vdpbf16ps path (bf16 layers, ATTN_KERNEL_ISA=avx512_bf16):
// row-major score tiles, bf16 Q, K, V and probabilities.
void Bf16Unit(const FlashSequence& s, const uint16_t* packed_k,
              const uint16_t* packed_v, int64_t h, int64_t g, int64_t i0,
              int64_t nq, int64_t hd, int64_t ctx_stride, const ThreadTiles& t,
              bool write_mask) {
  const int64_t hdp = (hd + 1) / 2 * 2;
  float* const o_base = s.context + i0 * ctx_stride + h * hd;
  int64_t max_limit = 0;
  for (int64_t r = 0; r < nq; ++r) {
    std::fill(o_base + r * ctx_stride, o_base + r * ctx_stride + hd, 0.0f);
    t.m[r] = kNegInf;
    t.l[r] = 0.0f;
    t.limit[r] = RowLimit(s, i0 + r);
    max_limit = std::max(max_limit, t.limit[r]);
  }
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int64_t r = 0; r < nq; ++r) {
    const float* q = q_base + r * s.q_stride;
    uint16_t* q16 = t.q16 + r * hdp;
    for (int64_t d = 0; d < hd; ++d) q16[d] = ToBf16(q[d]);
    if (hdp != hd) q16[hd] = 0;
  }
  const bool explicit_mask = s.mask_kind != MaskKind::kNone;
  const int64_t kblocks = CeilDiv(max_limit, BK);
  const int64_t nkb_total = CeilDiv(s.kv_len, BK);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const int64_t j0 = kb * BK;
    // Columns of this tile that any row may attend, in whole vectors.
    const int64_t nk = std::min(BK, max_limit - j0);
    const int nc = static_cast<int>(CeilDiv(nk, 16));
    const uint16_t* kp = packed_k + (g * nkb_total + kb) * hdp * BK;
    for (int64_t r0 = 0; r0 < nq; r0 += kRowsPerKernel) {
      const int rows =
          static_cast<int>(std::min<int64_t>(kRowsPerKernel, nq - r0));
      kQkBf16[rows - 1][nc - 1](t.q16 + r0 * hdp, hdp, kp, t.s + r0 * BK);
    }
    // Masks, then the online softmax.
    for (int64_t r = 0; r < nq; ++r) {
      float* row = t.s + r * BK;
      if (explicit_mask || j0 + 16 * nc > t.limit[r]) {
        MaskTileRow(s, i0 + r, j0, t.limit[r], 16 * nc, row);
      }
      t.alpha[r] = SoftmaxRow(row, nc, &t.m[r], &t.l[r], t.p16 + r * BK);
    }
    // Output update: probabilities past max_limit are zero.
    for (int64_t c0 = 0; c0 < hd; c0 += 64) {
      const int64_t width = std::min<int64_t>(64, hd - c0);
      const int nv = static_cast<int>(CeilDiv(width, 16));
      const __mmask16 last = LaneMask(width - 16 * (nv - 1));
      const uint16_t* vp = packed_v + (g * nkb_total + kb) * BK * hd + c0 * 2;
      for (int64_t r0 = 0; r0 < nq; r0 += kRowsPerKernel) {
        const int rows =
            static_cast<int>(std::min<int64_t>(kRowsPerKernel, nq - r0));
        kPvBf16[rows - 1][nv - 1](t.p16 + r0 * BK, CeilDiv(nk, 2), vp, hd,
                                  o_base + r0 * ctx_stride + c0, ctx_stride,
                                  t.alpha + r0, last);
      }
    }
  }
  NormaliseRows(s, i0, nq, hd, o_base, ctx_stride, t, write_mask, o_base,
                ctx_stride);
}

}  // namespace attn::kernels::internal::flash

ATTN_FLASH_TARGET_END

#endif  // defined(__x86_64__)
