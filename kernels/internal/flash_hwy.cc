// The Highway fp32 unit of the flash core (see flash_hwy.h). This file is
// compiled once per Highway target: hwy/foreach_target.h re-includes it
// with HWY_NAMESPACE set to each target's namespace (N_AVX2, N_NEON, ...);
// the table of targets at the end is compiled once (HWY_ONCE).

#include <algorithm>
#include <cstring>

#include "kernels/internal/hwy_targets.h"  // before foreach_target.h

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/flash_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/internal/flash_hwy.h"
#include "kernels/internal/flash_tiles.h"
#include "kernels/internal/hwy_exp-inl.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::internal::flash {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using D = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<D>;
using V = hn::Vec<D>;

// Lanes per vector (fixed per target: no SVE).
constexpr int64_t kL = HWY_LANES(float);
static_assert(BQ % kL == 0 && 16 % kL == 0, "query rows per vector");

// Register tile: kR rows (keys in Q.K^T, query rows in P.V) times up to kC
// vectors, plus kC loaded vectors and one broadcast.
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_EMU128
constexpr int kR = 6;
constexpr int kC = 2;  // 16 vector registers: 12 accumulators
#else
constexpr int kR = 6;
constexpr int kC = 4;  // 32 vector registers: 24 accumulators
#endif

using internal::HWY_NAMESPACE::Exp;  // hwy_exp-inl.h

// The first n (< kL) floats at p, the other lanes zero; never reads past
// p + n (the last row of a projection buffer may end there).
HWY_INLINE V LoadTail(D d, const float* p, int64_t n) {
  HWY_ALIGN float buf[kL] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return hn::Load(d, buf);
}

// st[R][NC vectors] = k[R][hd] . qt: R key rows (k_stride apart) against NC
// vectors of query rows of the transposed query block qt [hd][BQ].
template <int R, int NC>
void QkT(const float* HWY_RESTRICT k, int64_t k_stride, int64_t hd,
         const float* HWY_RESTRICT qt, float* HWY_RESTRICT st) {
  const D d;
  V acc[R][NC];
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < NC; ++c) acc[r][c] = hn::Zero(d);
  }
  for (int64_t e = 0; e < hd; ++e) {
    const float* qe = qt + e * BQ;
    V qv[NC];
    for (int c = 0; c < NC; ++c) qv[c] = hn::LoadU(d, qe + c * kL);
    for (int r = 0; r < R; ++r) {
      const V b = hn::Set(d, k[r * k_stride + e]);
      for (int c = 0; c < NC; ++c) acc[r][c] = hn::MulAdd(b, qv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < NC; ++c) hn::StoreU(acc[r][c], d, st + r * BQ + c * kL);
  }
}

// o[R][NV vectors] = o * alpha + p . v[nk][NV vectors], with p the
// transposed probabilities (row r's weight of key j at p[j * BQ + r]). With
// kTail the last vector of each V row holds `tail` (< kL) floats.
template <int R, int NV, bool kTail>
void Pv(const float* HWY_RESTRICT p, int64_t nk, const float* HWY_RESTRICT v,
        int64_t v_stride, int64_t tail, float* HWY_RESTRICT o, int64_t o_stride,
        const float* HWY_RESTRICT alpha) {
  const D d;
  V acc[R][NV];
  for (int r = 0; r < R; ++r) {
    const V a = hn::Set(d, alpha[r]);
    for (int c = 0; c < NV; ++c) {
      acc[r][c] = hn::Mul(hn::LoadU(d, o + r * o_stride + c * kL), a);
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    const float* vj = v + j * v_stride;
    V vv[NV];
    for (int c = 0; c < NV; ++c) {
      vv[c] = kTail && c == NV - 1 ? LoadTail(d, vj + c * kL, tail)
                                   : hn::LoadU(d, vj + c * kL);
    }
    for (int r = 0; r < R; ++r) {
      const V b = hn::Set(d, p[j * BQ + r]);
      for (int c = 0; c < NV; ++c) acc[r][c] = hn::MulAdd(b, vv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < NV; ++c)
      hn::StoreU(acc[r][c], d, o + r * o_stride + c * kL);
  }
}

using QkTFn = void (*)(const float*, int64_t, int64_t, const float*, float*);
using PvFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t,
                      float*, int64_t, const float*);

static_assert(kR == 6 && kC <= 4, "kernel tables below");
template <int R, int NV>
void PvDense(const float* p, int64_t nk, const float* v, int64_t v_stride,
             int64_t tail, float* o, int64_t o_stride, const float* alpha) {
  Pv<R, NV, false>(p, nk, v, v_stride, tail, o, o_stride, alpha);
}
template <int R, int NV>
void PvTail(const float* p, int64_t nk, const float* v, int64_t v_stride,
            int64_t tail, float* o, int64_t o_stride, const float* alpha) {
  Pv<R, NV, true>(p, nk, v, v_stride, tail, o, o_stride, alpha);
}

#define ATTN_HWY_ROW(K, r) \
  { K<r, 1>, K<r, 2>, K<r, 3>, K<r, 4> }
#define ATTN_HWY_TABLE(K)                                          \
  {                                                                \
    ATTN_HWY_ROW(K, 1), ATTN_HWY_ROW(K, 2), ATTN_HWY_ROW(K, 3),    \
        ATTN_HWY_ROW(K, 4), ATTN_HWY_ROW(K, 5), ATTN_HWY_ROW(K, 6) \
  }
const QkTFn kQkT[kR][4] = ATTN_HWY_TABLE(QkT);
const PvFn kPv[2][kR][4] = {ATTN_HWY_TABLE(PvDense), ATTN_HWY_TABLE(PvTail)};
#undef ATTN_HWY_TABLE
#undef ATTN_HWY_ROW

// Online-softmax step over the transposed score tile st[nk][BQ] for nqv
// vectors of query rows: updates the running max m, writes the rescale of
// the previous output to alpha, turns the scores into probabilities in
// place and updates the running sum l. Rows that have attended no key yet
// keep m = -inf; their exponents are taken relative to 0 (exp(-inf) = 0,
// not NaN).
void SoftmaxColumns(float* st, int64_t nk, int64_t nqv, float* m, float* l,
                    float* alpha) {
  const D d;
  const V neg_inf = hn::Set(d, kNegInf);
  for (int64_t c = 0; c < nqv; ++c) {
    float* col = st + c * kL;
    V mx0 = neg_inf, mx1 = neg_inf;
    int64_t j = 0;
    for (; j + 1 < nk; j += 2) {
      mx0 = hn::Max(mx0, hn::LoadU(d, col + j * BQ));
      mx1 = hn::Max(mx1, hn::LoadU(d, col + (j + 1) * BQ));
    }
    if (j < nk) mx0 = hn::Max(mx0, hn::LoadU(d, col + j * BQ));
    const V m_old = hn::LoadU(d, m + c * kL);
    const V m_new = hn::Max(m_old, hn::Max(mx0, mx1));
    const V base = hn::IfThenZeroElse(hn::Eq(m_new, neg_inf), m_new);
    const V a = Exp(d, hn::Sub(m_old, base));
    hn::StoreU(a, d, alpha + c * kL);
    hn::StoreU(m_new, d, m + c * kL);
    V sum0 = hn::Mul(hn::LoadU(d, l + c * kL), a);
    V sum1 = hn::Zero(d);
    for (j = 0; j + 1 < nk; j += 2) {
      const V p0 = Exp(d, hn::Sub(hn::LoadU(d, col + j * BQ), base));
      const V p1 = Exp(d, hn::Sub(hn::LoadU(d, col + (j + 1) * BQ), base));
      hn::StoreU(p0, d, col + j * BQ);
      hn::StoreU(p1, d, col + (j + 1) * BQ);
      sum0 = hn::Add(sum0, p0);
      sum1 = hn::Add(sum1, p1);
    }
    if (j < nk) {
      const V p0 = Exp(d, hn::Sub(hn::LoadU(d, col + j * BQ), base));
      hn::StoreU(p0, d, col + j * BQ);
      sum0 = hn::Add(sum0, p0);
    }
    hn::StoreU(hn::Add(sum0, sum1), d, l + c * kL);
  }
}

// Sets every score of key j0 + j (j < nk) at or past a row's limit
// (t.limit32) to -inf, from the first key some row does not attend.
void MaskLimits(int64_t j0, int64_t nk, int64_t nqv, int64_t min_limit,
                const ThreadTiles& t) {
  const D d;
  const DI di;
  const V neg_inf = hn::Set(d, kNegInf);
  for (int64_t j = std::max<int64_t>(min_limit - j0, 0); j < nk; ++j) {
    const auto key = hn::Set(di, static_cast<int32_t>(j0 + j));
    for (int64_t c = 0; c < nqv; ++c) {
      const auto keep =
          hn::RebindMask(d, hn::Gt(hn::LoadU(di, t.limit32 + c * kL), key));
      float* at = t.s + j * BQ + c * kL;
      hn::StoreU(hn::IfThenElse(keep, hn::LoadU(d, at), neg_inf), d, at);
    }
  }
}

}  // namespace

// F32Unit (flash_tiles.h) on this target.
void HwyUnit(const FlashSequence& s, const float* k, const float* v,
             int64_t kv_stride, int64_t h, int64_t i0, int64_t nq, int64_t hd,
             int64_t ctx_stride, const ThreadTiles& t, bool write_mask) {
  const int64_t hdv = PaddedHeadDim(hd);
  const int64_t nqv = CeilDiv(nq, kL);
  const auto [min_limit, max_limit] =
      StartColumns(s, i0, nq, static_cast<int>(CeilDiv(nq, 16)), t);
  std::fill(t.pv, t.pv + nq * hdv, 0.0f);
  // qt [hd][BQ]: the query block transposed, zero past row nq.
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int64_t r = 0; r < nqv * kL; ++r) {
    const float* q = q_base + r * s.q_stride;
    for (int64_t e = 0; e < hd; ++e) t.qt[e * BQ + r] = r < nq ? q[e] : 0.0f;
  }
  const int64_t hd_vectors = CeilDiv(hd, kL);
  const int64_t tail = hd - (hd_vectors - 1) * kL;  // lanes of the last one
  const int64_t kblocks = CeilDiv(max_limit, BK);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const int64_t j0 = kb * BK;
    const int64_t nk = std::min(BK, max_limit - j0);  // keys some row attends
    const float* kp = k + j0 * kv_stride;
    const float* vp = v + j0 * kv_stride;
    for (int64_t j = 0; j < nk; j += kR) {
      const int64_t rows = std::min<int64_t>(kR, nk - j);
      for (int64_t c = 0; c < nqv; c += kC) {
        const int64_t cols = std::min<int64_t>(kC, nqv - c);
        kQkT[rows - 1][cols - 1](kp + j * kv_stride, kv_stride, hd,
                                 t.qt + c * kL, t.s + j * BQ + c * kL);
      }
    }
    if (s.mask_kind != MaskKind::kNone) {
      MaskColumnsExplicit(s, i0, nq, j0, nk, t);
    }
    if (j0 + nk > min_limit) MaskLimits(j0, nk, nqv, min_limit, t);
    SoftmaxColumns(t.s, nk, nqv, t.m, t.l, t.alpha);
    for (int64_t c = 0; c < hd_vectors; c += kC) {
      const int64_t nv = std::min<int64_t>(kC, hd_vectors - c);
      const bool partial = c + nv == hd_vectors && tail < kL;
      for (int64_t r0 = 0; r0 < nq; r0 += kR) {
        const int64_t rows = std::min<int64_t>(kR, nq - r0);
        kPv[partial][rows - 1][nv - 1](t.s + r0, nk, vp + c * kL, kv_stride,
                                       tail, t.pv + r0 * hdv + c * kL, hdv,
                                       t.alpha + r0);
      }
    }
  }
  // Normalise; rows that saw no key get zeros and row_masked = 1.
  float* out = s.context + i0 * ctx_stride + h * hd;
  for (int64_t r = 0; r < nq; ++r) {
    const bool masked = t.l[r] == 0.0f;
    if (write_mask) s.row_masked[i0 + r] = masked ? 1 : 0;
    const float inv = masked ? 0.0f : 1.0f / t.l[r];
    const float* a = t.pv + r * hdv;
    float* o = out + r * ctx_stride;
    for (int64_t e = 0; e < hd; ++e) o[e] = a[e] * inv;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attn::kernels::internal::flash
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels::internal::flash {

absl::Span<const HwyTarget> HwyTargets() {
  // Best first: Highway's lower bits are better targets.
  static const HwyTarget kTargets[] = {
#if HWY_TARGETS & HWY_AVX3
    {HWY_AVX3, "hwy_avx3", &N_AVX3::HwyUnit},
#endif
#if HWY_TARGETS & HWY_AVX2
    {HWY_AVX2, "hwy_avx2", &N_AVX2::HwyUnit},
#endif
#if HWY_TARGETS & HWY_SSE4
    {HWY_SSE4, "hwy_sse4", &N_SSE4::HwyUnit},
#endif
#if HWY_TARGETS & HWY_NEON
    {HWY_NEON, "hwy_neon", &N_NEON::HwyUnit},
#endif
#if HWY_TARGETS & HWY_EMU128
    {HWY_EMU128, "hwy_emu128", &N_EMU128::HwyUnit},
#endif
  };
  return absl::MakeConstSpan(kTargets);
}

}  // namespace attn::kernels::internal::flash
#endif  // HWY_ONCE
