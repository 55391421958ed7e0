// Inline AVX-512 helpers of the flash core units (flash_f32.cc,
// flash_bf16.cc, flash_amx.cc). Every function here is compiled for
// AVX-512; callers must check the CPU first. Internal.
#ifndef ATTNSERVE_KERNELS_INTERNAL_FLASH_SIMD_H_
#define ATTNSERVE_KERNELS_INTERNAL_FLASH_SIMD_H_

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernels/internal/flash_tiles.h"

// ATTN_FLASH_TARGET_BEGIN(isa) ... ATTN_FLASH_TARGET_END compiles the code
// in between for the instruction sets `isa` (a GCC target string), with
// -Wmaybe-uninitialized off: GCC 12's AVX-512 headers trip it
// (_mm512_undefined_*).
#define ATTN_FLASH_PRAGMA(x) _Pragma(#x)
#define ATTN_FLASH_TARGET_BEGIN(isa)                                \
  ATTN_FLASH_PRAGMA(GCC push_options)                               \
  ATTN_FLASH_PRAGMA(GCC target(isa))                                \
  ATTN_FLASH_PRAGMA(GCC diagnostic push)                            \
  ATTN_FLASH_PRAGMA(GCC diagnostic ignored "-Wmaybe-uninitialized") \
  ATTN_FLASH_PRAGMA(GCC diagnostic ignored "-Wuninitialized")
#define ATTN_FLASH_TARGET_END           \
  ATTN_FLASH_PRAGMA(GCC diagnostic pop) \
  ATTN_FLASH_PRAGMA(GCC pop_options)
#define ATTN_FLASH_AVX512 "avx512f,avx512bw,avx512vl,avx512dq,fma"
#define ATTN_FLASH_AVX512_BF16 ATTN_FLASH_AVX512 ",avx512bf16"

ATTN_FLASH_TARGET_BEGIN(ATTN_FLASH_AVX512)

namespace attn::kernels::internal::flash {

// exp(x) for 16 lanes; lanes with x < -87 (including -inf) give exactly 0.
inline __m512 Exp512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.0f);
  const __mmask16 live = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(live, p, n);
}

inline __mmask16 LaneMask(int64_t lanes) {
  return lanes >= 16 ? __mmask16(0xFFFF)
                     : static_cast<__mmask16>((1u << lanes) - 1u);
}

// acc[r][c] = o[r][16c..] * alpha[r]: the running output of R rows,
// rescaled by the online-softmax correction (the last vector covers `last`
// lanes).
template <int R, int NV>
inline void LoadRescaled(const float* o, int64_t o_stride, const float* alpha,
                         __mmask16 last, __m512 (&acc)[R][NV]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = c == NV - 1 ? last : __mmask16(0xFFFF);
      acc[r][c] =
          _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + r * o_stride + 16 * c), a);
    }
  }
}

// acc[r][c] = 0.
template <int R, int NV>
inline void ZeroRows(__m512 (&acc)[R][NV]) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  }
}

// o[r][16c..] = acc[r][c] (the last vector writes `last` lanes).
template <int R, int NV>
inline void StoreRows(const __m512 (&acc)[R][NV], __mmask16 last, float* o,
                      int64_t o_stride) {
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = c == NV - 1 ? last : __mmask16(0xFFFF);
      _mm512_mask_storeu_ps(o + r * o_stride + 16 * c, m, acc[r][c]);
    }
  }
}

// Writes the first `cols` columns of rows[0..15] (16 floats each)
// transposed: out[c * out_stride + r] = rows[r][c] (out need not be
// aligned).
inline void Transpose16x16(__m512 (&rows)[16], int cols, float* out,
                           int64_t out_stride) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]);
    const __m512d b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d d = _mm512_castps_pd(t[4 * i + 3]);
    rows[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    rows[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    rows[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    rows[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // rows[4i + k] now holds, per 128-bit lane L, element 4L + (column k'),
  // for source rows 4i .. 4i + 3.
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512 a = _mm512_shuffle_f32x4(rows[k], rows[4 + k], 0x88);
    const __m512 b = _mm512_shuffle_f32x4(rows[k], rows[4 + k], 0xDD);
    const __m512 c = _mm512_shuffle_f32x4(rows[8 + k], rows[12 + k], 0x88);
    const __m512 d = _mm512_shuffle_f32x4(rows[8 + k], rows[12 + k], 0xDD);
    t[k] = _mm512_shuffle_f32x4(a, c, 0x88);
    t[k + 8] = _mm512_shuffle_f32x4(a, c, 0xDD);
    t[k + 4] = _mm512_shuffle_f32x4(b, d, 0x88);
    t[k + 12] = _mm512_shuffle_f32x4(b, d, 0xDD);
  }
#pragma GCC unroll 16
  for (int c = 0; c < 16; ++c) {
    if (c < cols) _mm512_storeu_ps(out + c * out_stride, t[c]);
  }
}

// First half of an online-softmax step over the transposed score tile
// st[nk][BQ], NV vectors of 16 query rows: updates the running max m of
// every query row, writes the rescale factors of the previous output to
// alpha, and returns per vector the exponent base (the new max, 0 for rows
// that have attended no key yet) and the rescaled running sum l * alpha.
// The caller adds exp(st - base) to sum and stores it to l. Every reduction
// runs down the columns, one lane per query row.
template <int NV>
inline void SoftmaxColumnsBegin(const float* st, int64_t nk, float* m,
                                const float* l, float* alpha,
                                __m512 (&base)[NV], __m512 (&sum)[NV]) {
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  __m512 mx[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) mx[v] = neg_inf;
  for (int64_t j = 0; j < nk; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      mx[v] = _mm512_max_ps(mx[v], _mm512_load_ps(st + j * BQ + 16 * v));
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __m512 m_old = _mm512_load_ps(m + 16 * v);
    const __m512 m_new = _mm512_max_ps(m_old, mx[v]);
    // Rows that have attended no key yet keep m = -inf; their exponents are
    // taken relative to 0 so that they are exp(-inf) = 0, not NaN.
    base[v] = _mm512_mask_mov_ps(m_new,
                                 _mm512_cmp_ps_mask(m_new, neg_inf, _CMP_EQ_OQ),
                                 _mm512_setzero_ps());
    const __m512 a = Exp512(_mm512_sub_ps(m_old, base[v]));
    _mm512_store_ps(alpha + 16 * v, a);
    _mm512_store_ps(m + 16 * v, m_new);
    sum[v] = _mm512_mul_ps(_mm512_load_ps(l + 16 * v), a);
  }
}

// Masks the transposed score tile t.s[nk][BQ] of keys j0 .. j0 + nk - 1:
// the explicit mask of the sequence (for the first nq query rows, keys below
// their limit) and every key at or past a row's limit (-inf; t.limit32 holds
// the limits of nqv vectors of query rows, min_limit their minimum).
inline void MaskColumns(const FlashSequence& s, int64_t i0, int64_t nq,
                        int64_t j0, int64_t nk, int nqv, int64_t min_limit,
                        const ThreadTiles& t) {
  MaskColumnsExplicit(s, i0, nq, j0, nk, t);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  for (int64_t j = std::max<int64_t>(min_limit - j0, 0); j < nk; ++j) {
    const __m512i key = _mm512_set1_epi32(static_cast<int32_t>(j0 + j));
    for (int v = 0; v < nqv; ++v) {
      const __mmask16 keep =
          _mm512_cmpgt_epi32_mask(_mm512_load_si512(t.limit32 + 16 * v), key);
      float* at = t.s + j * BQ + 16 * v;
      _mm512_store_ps(at,
                      _mm512_mask_mov_ps(neg_inf, keep, _mm512_load_ps(at)));
    }
  }
}

// Writes each of the nq unnormalised output rows at acc (acc_stride floats
// apart) divided by its softmax sum t.l[r] to out (out_stride apart; may be
// acc); rows that saw no key are set to zero and, if write_mask, flagged in
// s.row_masked.
inline void NormaliseRows(const FlashSequence& s, int64_t i0, int64_t nq,
                          int64_t hd, const float* acc, int64_t acc_stride,
                          const ThreadTiles& t, bool write_mask, float* out,
                          int64_t out_stride) {
  for (int64_t r = 0; r < nq; ++r) {
    const float* a = acc + r * acc_stride;
    float* o = out + r * out_stride;
    const bool masked = t.l[r] == 0.0f;
    if (write_mask) s.row_masked[i0 + r] = masked ? 1 : 0;
    const __m512 inv = _mm512_set1_ps(masked ? 0.0f : 1.0f / t.l[r]);
    for (int64_t d = 0; d < hd; d += 16) {
      const __mmask16 m = LaneMask(hd - d);
      const __m512 x =
          masked ? _mm512_setzero_ps()
                 : _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + d), inv);
      _mm512_mask_storeu_ps(o + d, m, x);
    }
  }
}

}  // namespace attn::kernels::internal::flash

ATTN_FLASH_TARGET_END

#endif  // ATTNSERVE_KERNELS_INTERNAL_FLASH_SIMD_H_
