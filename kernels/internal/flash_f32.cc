// The fp32 AVX-512 unit of the flash core. The query block is transposed
// once per unit so that score tiles come out key-major: the online softmax
// then runs down the columns, 16 query rows per vector.
// x86 only; other CPUs link flash_no_x86.cc and run the scalar unit.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/internal/flash_simd.h"
#include "kernels/internal/flash_tiles.h"

ATTN_FLASH_TARGET_BEGIN(ATTN_FLASH_AVX512)

namespace attn::kernels::internal::flash {
namespace {

// st[R][BQ] = k[R][hd] . qt (fp32): R dense key rows against the query
// block transposed, qt [hd][BQ]. Row j of st holds key j's score for NC
// vectors of 16 query rows.
template <int R, int NC>
void QkTF32(const float* k, int64_t k_stride, int64_t hd, const float* qt,
            float* st) {
  __m512 acc[R][NC];
  ZeroRows<R, NC>(acc);
  for (int64_t d = 0; d < hd; ++d) {
    const float* qd = qt + d * BQ;
    __m512 qv[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) qv[c] = _mm512_load_ps(qd + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(k[r * k_stride + d]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c)
        acc[r][c] = _mm512_fmadd_ps(b, qv[c], acc[r][c]);
    }
  }
  StoreRows<R, NC>(acc, __mmask16(0xFFFF), st, BQ);
}

// o[R][16*NV] = o * alpha + p . v[nk][16*NV] (fp32; the last vector covers
// `last` lanes), with p the transposed probabilities: row r's weight of key
// j at p[j * BQ + r].
template <int R, int NV>
void PvF32(const float* p, int64_t nk, const float* v, int64_t v_stride,
           float* o, int64_t o_stride, const float* alpha, __mmask16 last) {
  __m512 acc[R][NV];
  LoadRescaled<R, NV>(o, o_stride, alpha, last, acc);
  for (int64_t j = 0; j < nk; ++j) {
    __m512 vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      const __mmask16 m = c == NV - 1 ? last : __mmask16(0xFFFF);
      vv[c] = _mm512_maskz_loadu_ps(m, v + j * v_stride + 16 * c);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(p[j * BQ + r]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c)
        acc[r][c] = _mm512_fmadd_ps(b, vv[c], acc[r][c]);
    }
  }
  StoreRows<R, NV>(acc, last, o, o_stride);
}

using QkTF32Fn = void (*)(const float*, int64_t, int64_t, const float*, float*);
using PvF32Fn = void (*)(const float*, int64_t, const float*, int64_t, float*,
                         int64_t, const float*, __mmask16);

#define ATTN_ROW(K, r) \
  { K<r, 1>, K<r, 2>, K<r, 3>, K<r, 4> }
constexpr QkTF32Fn kQkTF32[kRowsPerKernel][4] = {
    ATTN_ROW(QkTF32, 1), ATTN_ROW(QkTF32, 2), ATTN_ROW(QkTF32, 3),
    ATTN_ROW(QkTF32, 4), ATTN_ROW(QkTF32, 5), ATTN_ROW(QkTF32, 6)};
constexpr PvF32Fn kPvF32[kRowsPerKernel][4] = {
    ATTN_ROW(PvF32, 1), ATTN_ROW(PvF32, 2), ATTN_ROW(PvF32, 3),
    ATTN_ROW(PvF32, 4), ATTN_ROW(PvF32, 5), ATTN_ROW(PvF32, 6)};
#undef ATTN_ROW

// Online-softmax step over the transposed score tile st[nk][BQ], NV vectors
// of 16 query rows (SoftmaxColumnsBegin), writing the probabilities over the
// scores.
template <int NV>
void SoftmaxColumns(float* st, int64_t nk, float* m, float* l, float* alpha) {
  __m512 base[NV], sum[NV];
  SoftmaxColumnsBegin<NV>(st, nk, m, l, alpha, base, sum);
  for (int64_t j = 0; j < nk; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* at = st + j * BQ + 16 * v;
      const __m512 p = Exp512(_mm512_sub_ps(_mm512_load_ps(at), base[v]));
      _mm512_store_ps(at, p);
      sum[v] = _mm512_add_ps(sum[v], p);
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) _mm512_store_ps(l + 16 * v, sum[v]);
}

using SoftmaxColumnsFn = void (*)(float*, int64_t, float*, float*, float*);
constexpr SoftmaxColumnsFn kSoftmaxColumns[4] = {
    SoftmaxColumns<1>, SoftmaxColumns<2>, SoftmaxColumns<3>, SoftmaxColumns<4>};

}  // namespace

// One unit on the fp32 AVX-512 path. The query block is transposed once per
// unit (qt [hd][BQ]) so that the scores come out key-major (st [nk][BQ]):
// the online softmax then runs down the columns, 16 query rows per vector,
// with no horizontal reductions and no scalar exp. k and v point at key 0
// of kv head g, rows kv_stride floats apart (the projection output, or a
// dense packed copy).
void F32Unit(const FlashSequence& s, const float* k, const float* v,
             int64_t kv_stride, int64_t h, int64_t i0, int64_t nq, int64_t hd,
             int64_t ctx_stride, const ThreadTiles& t, bool write_mask) {
  float* const o_base = s.context + i0 * ctx_stride + h * hd;
  const int nqv = static_cast<int>(CeilDiv(nq, 16));
  const auto [min_limit, max_limit] = StartColumns(s, i0, nq, nqv, t);
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int64_t r = 0; r < nq; ++r) {
    std::fill(t.pv + r * hd, t.pv + (r + 1) * hd, 0.0f);
  }
  for (int v = 0; v < nqv; ++v) {
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
      const int cols = static_cast<int>(std::min<int64_t>(16, hd - d0));
      const __mmask16 lanes = LaneMask(cols);
      __m512 rows[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t i = 16 * v + r;
        rows[r] =
            i < nq ? _mm512_maskz_loadu_ps(lanes, q_base + i * s.q_stride + d0)
                   : _mm512_setzero_ps();
      }
      Transpose16x16(rows, cols, t.qt + d0 * BQ + 16 * v, BQ);
    }
  }
  const int64_t kblocks = CeilDiv(max_limit, BK);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const int64_t j0 = kb * BK;
    // Keys of this block that any row may attend.
    const int64_t nk = std::min(BK, max_limit - j0);
    const float* kp = k + j0 * kv_stride;
    const float* vp = v + j0 * kv_stride;
    for (int64_t j = 0; j < nk; j += kRowsPerKernel) {
      const int rows =
          static_cast<int>(std::min<int64_t>(kRowsPerKernel, nk - j));
      kQkTF32[rows - 1][nqv - 1](kp + j * kv_stride, kv_stride, hd, t.qt,
                                 t.s + j * BQ);
    }
    if (s.mask_kind != MaskKind::kNone || j0 + nk > min_limit) {
      MaskColumns(s, i0, nq, j0, nk, nqv, min_limit, t);
    }
    kSoftmaxColumns[nqv - 1](t.s, nk, t.m, t.l, t.alpha);
    for (int64_t c0 = 0; c0 < hd; c0 += 64) {
      const int64_t width = std::min<int64_t>(64, hd - c0);
      const int nv = static_cast<int>(CeilDiv(width, 16));
      const __mmask16 last = LaneMask(width - 16 * (nv - 1));
      for (int64_t r0 = 0; r0 < nq; r0 += kRowsPerKernel) {
        const int rows =
            static_cast<int>(std::min<int64_t>(kRowsPerKernel, nq - r0));
        kPvF32[rows - 1][nv - 1](t.s + r0, nk, vp + c0, kv_stride,
                                 t.pv + r0 * hd + c0, hd, t.alpha + r0, last);
      }
    }
  }
  NormaliseRows(s, i0, nq, hd, t.pv, hd, t, write_mask, o_base, ctx_stride);
}

}  // namespace attn::kernels::internal::flash

ATTN_FLASH_TARGET_END

#endif  // defined(__x86_64__)
