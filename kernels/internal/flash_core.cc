#include "kernels/internal/flash_core.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>

#include "absl/strings/str_cat.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels::internal {
namespace {

constexpr int64_t BQ = FlashCore::kBlockQ;
constexpr int64_t BK = FlashCore::kBlockK;
constexpr int kRowsPerKernel = 6;  // 6 rows x 4 vectors = 24 accumulators
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Keys j < RowLimit(s, i) may be attended by query row i.
int64_t RowLimit(const FlashSequence& s, int64_t i) {
  int64_t limit = s.key_limit;
  if (s.causal) limit = std::min(limit, i + (s.kv_len - s.q_len) + 1);
  return std::max<int64_t>(limit, 0);
}

// Round-to-nearest-even fp32 -> bf16 (inputs are finite).
inline uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

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

// One work unit: a block of query rows of one head of one sequence.
struct Unit {
  int32_t seq;
  int32_t head;
  int32_t qblock;
  int64_t cost;  // attended key blocks x rows, for scheduling
};

// Per-thread tile scratch.
struct ThreadTiles {
  float* s;          // [BQ][BK] scores / probabilities (fp32); transposed
                     // [BK][BQ] on the fp32 path
  uint16_t* p16;     // [BQ][BK] probabilities (bf16)
  uint16_t* q16;     // [BQ][hdp] query rows (bf16)
  float* m;          // [BQ] running max
  float* l;          // [BQ] running sum
  float* alpha;      // [BQ] rescale of this step
  float* qt;         // [hd][BQ] query rows, transposed (fp32 path)
  int64_t* limit;    // [BQ] row limits
  int32_t* limit32;  // [BQ] row limits as int32 (fp32 path)
  float* pv;         // [BQ][hd] P.V of one key block (AMX)
};

// Divides each of the nq output rows at o_base by its softmax sum t.l[r];
// rows that saw no key become zero and, if write_mask, are flagged in
// s.row_masked.
void NormaliseRows(const FlashSequence& s, int64_t i0, int64_t nq, int64_t hd,
                   int64_t ctx_stride, const ThreadTiles& t, bool write_mask,
                   float* o_base) {
  for (int64_t r = 0; r < nq; ++r) {
    float* o = o_base + r * ctx_stride;
    const bool masked = t.l[r] == 0.0f;
    if (write_mask) s.row_masked[i0 + r] = masked ? 1 : 0;
    const float inv = masked ? 0.0f : 1.0f / t.l[r];
    for (int64_t d = 0; d < hd; ++d) o[d] *= inv;
  }
}

// ---------------------------------------------------------------------------
// Portable scalar path (any CPU): one query row at a time, two passes over
// its keys, in fp32. Used when AVX-512 is missing and by the tests.
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

// ---------------------------------------------------------------------------
// AVX-512 kernels (chosen at run time).
#pragma GCC push_options
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")

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

inline int32_t Word(const uint16_t* p) {
  int32_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// st[R][BQ] = k[R][hd] . qt (fp32): R dense key rows against the query
// block transposed, qt [hd][BQ]. Row j of st holds key j's score for NC
// vectors of 16 query rows.
template <int R, int NC>
void QkTF32(const float* k, int64_t k_stride, int64_t hd, const float* qt,
            float* st) {
  __m512 acc[R][NC];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_setzero_ps();
  }
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
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      _mm512_store_ps(st + r * BQ + 16 * c, acc[r][c]);
  }
}

// s[R][BK] = q16[R][hdp] . kp, kp packed [hdp/2][BK][2] (bf16).
template <int R, int NC>
void QkBf16(const uint16_t* q16, int64_t hdp, const uint16_t* kp, float* s) {
  __m512 acc[R][NC];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_setzero_ps();
  }
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
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c)
      _mm512_store_ps(s + r * BK + 16 * c, acc[r][c]);
  }
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

using QkTF32Fn = void (*)(const float*, int64_t, int64_t, const float*, float*);
using QkBf16Fn = void (*)(const uint16_t*, int64_t, const uint16_t*, float*);
using PvF32Fn = void (*)(const float*, int64_t, const float*, int64_t, float*,
                         int64_t, const float*, __mmask16);
using PvBf16Fn = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t,
                          float*, int64_t, const float*, __mmask16);

#define ATTN_QK_ROW(K, r) \
  { K<r, 1>, K<r, 2>, K<r, 3>, K<r, 4> }
constexpr QkTF32Fn kQkTF32[kRowsPerKernel][4] = {
    ATTN_QK_ROW(QkTF32, 1), ATTN_QK_ROW(QkTF32, 2), ATTN_QK_ROW(QkTF32, 3),
    ATTN_QK_ROW(QkTF32, 4), ATTN_QK_ROW(QkTF32, 5), ATTN_QK_ROW(QkTF32, 6)};
constexpr QkBf16Fn kQkBf16[kRowsPerKernel][4] = {
    ATTN_QK_ROW(QkBf16, 1), ATTN_QK_ROW(QkBf16, 2), ATTN_QK_ROW(QkBf16, 3),
    ATTN_QK_ROW(QkBf16, 4), ATTN_QK_ROW(QkBf16, 5), ATTN_QK_ROW(QkBf16, 6)};
#undef ATTN_QK_ROW
#define ATTN_PV_ROW(K, r) \
  { K<r, 1>, K<r, 2>, K<r, 3>, K<r, 4> }
constexpr PvF32Fn kPvF32[kRowsPerKernel][4] = {
    ATTN_PV_ROW(PvF32, 1), ATTN_PV_ROW(PvF32, 2), ATTN_PV_ROW(PvF32, 3),
    ATTN_PV_ROW(PvF32, 4), ATTN_PV_ROW(PvF32, 5), ATTN_PV_ROW(PvF32, 6)};
constexpr PvBf16Fn kPvBf16[kRowsPerKernel][4] = {
    ATTN_PV_ROW(PvBf16, 1), ATTN_PV_ROW(PvBf16, 2), ATTN_PV_ROW(PvBf16, 3),
    ATTN_PV_ROW(PvBf16, 4), ATTN_PV_ROW(PvBf16, 5), ATTN_PV_ROW(PvBf16, 6)};
#undef ATTN_PV_ROW

// Online-softmax step for one tile row: updates m, l, returns the rescale
// factor of the previous output and writes the probabilities (fp32 in
// place, or bf16 to p16 when not null).
float SoftmaxRow(float* row, int nc, float* m, float* l, uint16_t* p16) {
  __m512 v[4];
  __m512 vmax = _mm512_set1_ps(kNegInf);
  for (int c = 0; c < nc; ++c) {
    v[c] = _mm512_load_ps(row + 16 * c);
    vmax = _mm512_max_ps(vmax, v[c]);
  }
  const float mx = _mm512_reduce_max_ps(vmax);
  const float m_new = std::max(*m, mx);
  if (m_new == kNegInf) {  // nothing attended yet
    if (p16 != nullptr) {
      std::memset(p16, 0, 16 * nc * sizeof(uint16_t));
    } else {
      std::memset(row, 0, 16 * nc * sizeof(float));
    }
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
  if (p16 != nullptr) {
    for (int c = 0; c < nc; c += 2) {
      const __m512 hi = c + 1 < nc ? v[c + 1] : _mm512_setzero_ps();
      _mm512_storeu_si512(p16 + 16 * c, (__m512i)_mm512_cvtne2ps_pbh(hi, v[c]));
    }
  } else {
    for (int c = 0; c < nc; ++c) _mm512_store_ps(row + 16 * c, v[c]);
  }
  return alpha;
}

// Online-softmax step over the transposed score tile st[nk][BQ], NV vectors
// of 16 query rows: updates the running max m and sum l of every query row,
// writes the rescale factors of the previous output to alpha and the
// probabilities over the scores. Every reduction runs down the columns, one
// lane per query row.
template <int NV>
void SoftmaxColumns(float* st, int64_t nk, float* m, float* l, float* alpha) {
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
  __m512 base[NV], sum[NV];
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

// Masks the transposed score tile st[nk][BQ] of keys j0 .. j0 + nk - 1:
// the explicit mask of the sequence (for the first nq query rows, keys below
// their limit) and every key at or past a row's limit (-inf).
void MaskColumns(const FlashSequence& s, int64_t i0, int64_t nq, int64_t j0,
                 int64_t nk, int nqv, int64_t min_limit, const ThreadTiles& t) {
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

// ---------------------------------------------------------------------------
// AMX bf16 tile kernels (Sapphire Rapids and later). Every tile register is
// configured as 16 rows x 64 bytes: A = 16 rows x 32 bf16, B = 16 key (or
// dim) pairs x 16 columns x 2 bf16 (the VNNI layout of the packed K and V
// blocks), C = 16 x 16 fp32. Work goes in 32 x 32 output blocks: C tiles
// 0-3, A tiles 4-5, B tiles 6-7.
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")

struct alignas(64) TileConfig {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Every tile 16 rows x 64 bytes. A constant in memory: GCC's ldtilecfg is
// inline asm without a memory input, so stores to a local could be dropped.
constexpr TileConfig kTileConfig = {1,
                                    0,
                                    {},
                                    {64, 64, 64, 64, 64, 64, 64, 64},
                                    {16, 16, 16, 16, 16, 16, 16, 16}};

// GCC's tile load/store intrinsics are inline asm without memory operands:
// the kernels are kept out of line and fenced with compiler memory barriers
// so that the buffers they read and write are never cached in registers.
inline void CompilerBarrier() { asm volatile("" ::: "memory"); }

void AmxConfigure() { _tile_loadconfig(&kTileConfig); }

void AmxRelease() { _tile_release(); }

// s[32 * row_pairs][32 * col_pairs] (row stride BK) = q16 . kp, with q16
// [rows][hd] bf16 and kp packed [hd/2][BK][2]. REQUIRES: hd % 32 == 0.
__attribute__((noinline)) void QkAmx(const uint16_t* q16, int64_t hd,
                                     const uint16_t* kp, int row_pairs,
                                     int col_pairs, float* s) {
  CompilerBarrier();
  for (int rp = 0; rp < row_pairs; ++rp) {
    const uint16_t* a0 = q16 + rp * 32 * hd;
    const uint16_t* a1 = a0 + 16 * hd;
    for (int cp = 0; cp < col_pairs; ++cp) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t k = 0; k < hd; k += 32) {
        _tile_loadd(4, a0 + k, hd * 2);
        _tile_loadd(5, a1 + k, hd * 2);
        const uint16_t* b = kp + k * BK + cp * 64;
        _tile_loadd(6, b, BK * 4);
        _tile_loadd(7, b + 32, BK * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      float* c = s + rp * 32 * BK + cp * 32;
      _tile_stored(0, c, BK * 4);
      _tile_stored(1, c + 16, BK * 4);
      _tile_stored(2, c + 16 * BK, BK * 4);
      _tile_stored(3, c + 16 * BK + 16, BK * 4);
    }
  }
  CompilerBarrier();
}

// pv[32 * row_pairs][hd] = p16[..][BK] . vp over 32 * key_chunks keys, with
// vp packed [BK/2][hd][2]. REQUIRES: hd % 32 == 0.
__attribute__((noinline)) void PvAmx(const uint16_t* p16, int key_chunks,
                                     const uint16_t* vp, int64_t hd,
                                     int row_pairs, float* pv) {
  CompilerBarrier();
  for (int rp = 0; rp < row_pairs; ++rp) {
    const uint16_t* a0 = p16 + rp * 32 * BK;
    const uint16_t* a1 = a0 + 16 * BK;
    for (int64_t c0 = 0; c0 < hd; c0 += 32) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int kc = 0; kc < key_chunks; ++kc) {
        _tile_loadd(4, a0 + kc * 32, BK * 2);
        _tile_loadd(5, a1 + kc * 32, BK * 2);
        const uint16_t* b = vp + kc * 32 * hd + c0 * 2;
        _tile_loadd(6, b, hd * 4);
        _tile_loadd(7, b + 32, hd * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      float* c = pv + rp * 32 * hd + c0;
      _tile_stored(0, c, hd * 4);
      _tile_stored(1, c + 16, hd * 4);
      _tile_stored(2, c + 16 * hd, hd * 4);
      _tile_stored(3, c + 16 * hd + 16, hd * 4);
    }
  }
  CompilerBarrier();
}

#pragma GCC pop_options

// One unit on the AMX path: as Bf16Unit with tile kernels; key blocks
// are processed in whole 32-key chunks (the packed pad keys are zero and
// masked), query rows in pairs of 16-row tiles (pad rows are zero and their
// results ignored). REQUIRES: hd % 32 == 0, AmxConfigure() on this thread.
void AmxUnit(const FlashSequence& s, const uint16_t* packed_k,
             const uint16_t* packed_v, int64_t h, int64_t g, int64_t i0,
             int64_t nq, int64_t hd, int64_t ctx_stride, const ThreadTiles& t,
             bool write_mask) {
  float* const o_base = s.context + i0 * ctx_stride + h * hd;
  int64_t max_limit = 0;
  for (int64_t r = 0; r < nq; ++r) {
    std::fill(o_base + r * ctx_stride, o_base + r * ctx_stride + hd, 0.0f);
    t.m[r] = kNegInf;
    t.l[r] = 0.0f;
    t.limit[r] = RowLimit(s, i0 + r);
    max_limit = std::max(max_limit, t.limit[r]);
  }
  const int row_pairs = static_cast<int>(CeilDiv(nq, 32));
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int64_t r = 0; r < nq; ++r) {
    const float* q = q_base + r * s.q_stride;
    uint16_t* q16 = t.q16 + r * hd;
    for (int64_t d = 0; d < hd; d += 32) {
      const __m512 lo = _mm512_loadu_ps(q + d);
      const __m512 hi = _mm512_loadu_ps(q + d + 16);
      _mm512_storeu_si512(q16 + d, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
  }
  std::memset(t.q16 + nq * hd, 0, (row_pairs * 32 - nq) * hd * 2);
  const bool explicit_mask = s.mask_kind != MaskKind::kNone;
  const int64_t kblocks = CeilDiv(max_limit, BK);
  const int64_t nkb_total = CeilDiv(s.kv_len, BK);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const int64_t j0 = kb * BK;
    const int64_t nk = std::min(BK, max_limit - j0);
    const int chunks = static_cast<int>(CeilDiv(nk, 32));
    const int nc = 2 * chunks;
    const int64_t block = g * nkb_total + kb;
    QkAmx(t.q16, hd, packed_k + block * hd * BK, row_pairs, chunks, t.s);
    for (int64_t r = 0; r < nq; ++r) {
      float* row = t.s + r * BK;
      if (explicit_mask || j0 + 16 * nc > t.limit[r]) {
        MaskTileRow(s, i0 + r, j0, t.limit[r], 16 * nc, row);
      }
      t.alpha[r] = SoftmaxRow(row, nc, &t.m[r], &t.l[r], t.p16 + r * BK);
    }
    PvAmx(t.p16, chunks, packed_v + block * BK * hd, hd, row_pairs, t.pv);
    for (int64_t r = 0; r < nq; ++r) {
      float* o = o_base + r * ctx_stride;
      const float* pv = t.pv + r * hd;
      const __m512 a = _mm512_set1_ps(t.alpha[r]);
      for (int64_t d = 0; d < hd; d += 16) {
        _mm512_storeu_ps(o + d, _mm512_fmadd_ps(_mm512_loadu_ps(o + d), a,
                                                _mm512_loadu_ps(pv + d)));
      }
    }
  }
  NormaliseRows(s, i0, nq, hd, ctx_stride, t, write_mask, o_base);
}

// Writes the first `cols` columns of rows[0..15] (16 floats each)
// transposed: out[c * out_stride + r] = rows[r][c]. out is 64-byte aligned.
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
    if (c < cols) _mm512_store_ps(out + c * out_stride, t[c]);
  }
}

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
  int64_t max_limit = 0;
  int64_t min_limit = s.kv_len;
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int64_t r = 0; r < 16 * nqv; ++r) {
    t.m[r] = kNegInf;
    t.l[r] = 0.0f;
    // Pad lanes (r >= nq) see zero queries; their results are never stored.
    t.limit[r] = r < nq ? RowLimit(s, i0 + r) : 0;
    t.limit32[r] = static_cast<int32_t>(t.limit[r]);
    if (r >= nq) continue;
    std::fill(o_base + r * ctx_stride, o_base + r * ctx_stride + hd, 0.0f);
    max_limit = std::max(max_limit, t.limit[r]);
    min_limit = std::min(min_limit, t.limit[r]);
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
                                 o_base + r0 * ctx_stride + c0, ctx_stride,
                                 t.alpha + r0, last);
      }
    }
  }
  NormaliseRows(s, i0, nq, hd, ctx_stride, t, write_mask, o_base);
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
  NormaliseRows(s, i0, nq, hd, ctx_stride, t, write_mask, o_base);
}

// Whether the fp32 core packs the keys and values of `s` (long sequences:
// every query block re-reads them, and strided rows defeat the prefetchers).
// Measured on the development machine: packing pays from about 1k queries
// (seq 4096 causal +15%), and costs up to 10% at seq 512.
bool PackF32(const FlashSequence& s) { return s.q_len > 1024; }

// Packs block kb of kv head g of `s`: fp32 K and V as dense [BK][hd] rows,
// or bf16 K as pairs [hdp/2][BK][2] and V as [BK/2][hd][2] (keys past kv_len
// zero).
template <bool kBf16>
void PackBlock(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
               void* k_out, void* v_any) {
  uint16_t* v_out = static_cast<uint16_t*>(v_any);
  const int64_t j0 = kb * BK;
  const int64_t nk = std::min(BK, s.kv_len - j0);
  if (!kBf16) {
    // Dense [BK][hd] rows of K and of V (the kernels stream them); rows past
    // nk are never read.
    float* k_rows = static_cast<float*>(k_out);
    float* v_rows = static_cast<float*>(v_any);
    for (int64_t c = 0; c < nk; ++c) {
      const int64_t at = (j0 + c) * s.kv_stride + g * hd;
      std::memcpy(k_rows + c * hd, s.k + at, hd * sizeof(float));
      std::memcpy(v_rows + c * hd, s.v + at, hd * sizeof(float));
    }
    return;
  }
  const int64_t hdp = (hd + 1) / 2 * 2;
  uint16_t* kp = static_cast<uint16_t*>(k_out);
  // Whole 32-key chunks; the pad keys are zero (P.V reads key pairs, the
  // AMX kernels 32-key chunks).
  const int64_t width = std::min(BK, CeilDiv(nk, 32) * 32);
  if (hd % 32 == 0) {
    // Vectorised: K as 16 dimension pairs per scatter (word (d/2)*BK + c),
    // V as key pairs interleaved per dimension with one word permute.
    int32_t* kw = static_cast<int32_t*>(k_out);
    const __m512i k_index = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(static_cast<int32_t>(BK)));
    const __m512i v_perm = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
        6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t c = 0; c < width; ++c) {
      const float* k = s.k + (j0 + c) * s.kv_stride + g * hd;
      for (int64_t d = 0; d < hd; d += 32) {
        const __m512i w =
            c < nk ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(k + d + 16),
                                                  _mm512_loadu_ps(k + d))
                   : _mm512_setzero_si512();
        _mm512_i32scatter_epi32(kw + (d / 2) * BK + c, k_index, w, 4);
      }
    }
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

#pragma GCC diagnostic pop
#pragma GCC pop_options

// Asks the kernel once per process for permission to use the AMX tile data
// state (Linux >= 5.16). Returns false when it is refused.
bool RequestAmxPermission() {
  static const bool granted = [] {
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

}  // namespace

FlashCore::FlashCore(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     ComputeDType dtype)
    : num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      isa_(Isa::kScalar) {
  const char* env = std::getenv("ATTN_KERNEL_ISA");
  const std::string forced = env != nullptr ? env : "";
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  if (forced != "scalar" && isa >= dnnl::cpu_isa::avx512_core) {
    // The vdpbf16ps core is opt-in: on the development CPU (Sapphire
    // Rapids class, one vdpbf16ps port) it is slower than the fp32 FMA core
    // because it adds bf16 packing without more FLOP/cycle; bf16 mode then
    // keeps bf16 GEMMs for the projections and an fp32 core.
    isa_ = dtype == ComputeDType::kBFloat16 &&
                   isa >= dnnl::cpu_isa::avx512_core_bf16 &&
                   forced == "avx512_bf16"
               ? Isa::kAvx512Bf16
               : Isa::kAvx512;
    // bf16 layers use the AMX tile core by default where the CPU has AMX
    // (and the OS grants the tile state) and head_dim is a multiple of 32.
    if (dtype == ComputeDType::kBFloat16 && forced.empty() &&
        isa >= dnnl::cpu_isa::avx512_core_amx && head_dim % 32 == 0 &&
        RequestAmxPermission()) {
      isa_ = Isa::kAmxBf16;
    }
  }
}

const char* FlashCore::isa() const {
  switch (isa_) {
    case Isa::kAmxBf16:
      return "amx_bf16";
    case Isa::kAvx512Bf16:
      return "avx512_bf16";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kScalar:
      break;
  }
  return "scalar";
}

absl::Status FlashCore::Forward(absl::Span<const FlashSequence> seqs) const {
  if (seqs.empty()) return absl::OkStatus();
  const int64_t hd = head_dim_;
  const int64_t hdp = (hd + 1) / 2 * 2;
  const int64_t group = num_heads_ / num_kv_heads_;
  const int64_t ctx_stride = num_heads_ * hd;
  const bool amx = isa_ == Isa::kAmxBf16;
  const bool bf16 = isa_ == Isa::kAvx512Bf16 || amx;
  const bool simd = isa_ != Isa::kScalar;
  const int threads = std::max(1, omp_get_max_threads());

  // Scratch layout: units, packed K/V, per-thread tiles.
  const int64_t n = static_cast<int64_t>(seqs.size());
  int64_t num_units = 0;
  int64_t max_kv = 0;
  for (const FlashSequence& s : seqs) {
    num_units += num_heads_ * CeilDiv(s.q_len, BQ);
    max_kv = std::max(max_kv, s.kv_len);
  }
  const int64_t k_block = bf16 ? hdp * BK : hd * BK;
  const int64_t v_block = BK * hd;  // bf16 pairs or fp32 rows
  ScratchLayout layout;
  const size_t units_at = layout.Add<Unit>(num_units);
  const size_t offsets_at = layout.Add<int64_t>(n + 1);
  int64_t total_blocks = 0;
  for (const FlashSequence& s : seqs) {
    total_blocks += num_kv_heads_ * CeilDiv(s.kv_len, BK);
  }
  const size_t k_at = simd ? layout.Add<float>(total_blocks * k_block) : 0;
  const size_t v_at = simd
                          ? (bf16 ? layout.Add<uint16_t>(total_blocks * v_block)
                                  : layout.Add<float>(total_blocks * v_block))
                          : 0;
  // Per-thread tiles (floats, each part 64-byte aligned); the scalar path
  // uses the same space as one row of scores.
  auto round16 = [](int64_t f) { return (f + 15) / 16 * 16; };
  const int64_t p16_off = BQ * BK;
  const int64_t q16_off = p16_off + round16(BQ * BK / 2);
  const int64_t qt_off = q16_off + round16((BQ * hdp + 1) / 2);
  const int64_t m_off = qt_off + (amx || bf16 ? 0 : round16(hd * BQ));
  const int64_t limit_off = m_off + 3 * BQ;
  const int64_t limit32_off = limit_off + 2 * BQ;
  const int64_t pv_off = limit32_off + BQ;
  const int64_t thread_stride =
      round16(std::max(pv_off + (amx ? BQ * hd : 0), max_kv + 16));
  const size_t tiles_at = layout.Add<float>(threads * thread_stride);

  ScratchPool::Lease arena = pool_.Acquire();
  void* base = nullptr;
  try {
    base = arena->Reserve(layout.bytes());
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory allocating ", layout.bytes(),
                     " bytes of attention scratch"));
  }
  Unit* units = ScratchLayout::At<Unit>(base, units_at);
  int64_t* block_offset = ScratchLayout::At<int64_t>(base, offsets_at);
  float* k_packed_f32 = ScratchLayout::At<float>(base, k_at);
  uint16_t* k_packed_bf16 = ScratchLayout::At<uint16_t>(base, k_at);
  uint16_t* v_packed = ScratchLayout::At<uint16_t>(base, v_at);
  float* v_packed_f32 = ScratchLayout::At<float>(base, v_at);
  float* tiles = ScratchLayout::At<float>(base, tiles_at);

  // Units, heaviest first (causal blocks near the end see more keys); among
  // equals, the query blocks of one head follow each other so that the
  // head's packed K and V stay in the cores' caches.
  int64_t u = 0;
  block_offset[0] = 0;
  for (int64_t si = 0; si < n; ++si) {
    const FlashSequence& s = seqs[si];
    block_offset[si + 1] =
        block_offset[si] + num_kv_heads_ * CeilDiv(s.kv_len, BK);
    for (int64_t h = 0; h < num_heads_; ++h) {
      for (int64_t qb = 0; qb < CeilDiv(s.q_len, BQ); ++qb) {
        const int64_t i0 = qb * BQ;
        const int64_t nq = std::min(BQ, s.q_len - i0);
        const int64_t limit =
            std::max(RowLimit(s, i0 + nq - 1), RowLimit(s, i0));
        const int64_t cost = nq * (CeilDiv(limit, BK) + 1);
        units[u++] = Unit{static_cast<int32_t>(si), static_cast<int32_t>(h),
                          static_cast<int32_t>(qb), cost};
      }
    }
  }
  std::stable_sort(units, units + num_units, [](const Unit& a, const Unit& b) {
    return a.cost > b.cost;
  });

  if (simd) {
    // Pack K and V once per call: [seq][kv head][block]. The fp32 core reads
    // short sequences straight from the projection output (a copy would cost
    // more than it saves) and packs only the long ones, whose keys every
    // query block re-reads.
    const int64_t blocks = block_offset[n];
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t si =
          std::upper_bound(block_offset, block_offset + n + 1, b) -
          block_offset - 1;
      const FlashSequence& s = seqs[si];
      if (!bf16 && !PackF32(s)) continue;
      const int64_t nkb = CeilDiv(s.kv_len, BK);
      const int64_t local = b - block_offset[si];
      const int64_t g = local / nkb;
      const int64_t kb = local % nkb;
      if (bf16) {
        PackBlock<true>(s, g, kb, hd, k_packed_bf16 + b * k_block,
                        v_packed + b * v_block);
      } else {
        PackBlock<false>(s, g, kb, hd, k_packed_f32 + b * k_block,
                         v_packed_f32 + b * v_block);
      }
    }
  }

#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t ui = 0; ui < num_units; ++ui) {
    const Unit& unit = units[ui];
    const FlashSequence& s = seqs[unit.seq];
    const int64_t h = unit.head;
    const int64_t g = h / group;
    const int64_t i0 = unit.qblock * BQ;
    const int64_t nq = std::min(BQ, s.q_len - i0);
    float* mine = tiles + omp_get_thread_num() * thread_stride;
    if (!simd) {
      ScalarUnit(s, h, g, i0, nq, hd, ctx_stride, mine, h == 0);
      continue;
    }
    ThreadTiles t;
    t.s = mine;
    t.p16 = reinterpret_cast<uint16_t*>(mine + p16_off);
    t.q16 = reinterpret_cast<uint16_t*>(mine + q16_off);
    t.m = mine + m_off;
    t.l = t.m + BQ;
    t.alpha = t.l + BQ;
    t.qt = mine + qt_off;
    t.limit = reinterpret_cast<int64_t*>(mine + limit_off);
    t.limit32 = reinterpret_cast<int32_t*>(mine + limit32_off);
    t.pv = mine + pv_off;
    const int64_t first_block = block_offset[unit.seq];
    if (amx) {
      AmxConfigure();
      AmxUnit(s, k_packed_bf16 + first_block * k_block,
              v_packed + first_block * v_block, h, g, i0, nq, hd, ctx_stride, t,
              h == 0);
      AmxRelease();
    } else if (bf16) {
      Bf16Unit(s, k_packed_bf16 + first_block * k_block,
               v_packed + first_block * v_block, h, g, i0, nq, hd, ctx_stride,
               t, h == 0);
    } else if (PackF32(s)) {
      const int64_t head_rows = CeilDiv(s.kv_len, BK) * BK;
      F32Unit(s, k_packed_f32 + first_block * k_block + g * head_rows * hd,
              v_packed_f32 + first_block * v_block + g * head_rows * hd, hd, h,
              i0, nq, hd, ctx_stride, t, h == 0);
    } else {
      F32Unit(s, s.k + g * hd, s.v + g * hd, s.kv_stride, h, i0, nq, hd,
              ctx_stride, t, h == 0);
    }
  }
  return absl::OkStatus();
}

}  // namespace attn::kernels::internal
