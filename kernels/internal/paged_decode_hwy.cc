// The Highway decode span (paged_decode_hwy.h). This file is compiled once
// per Highway target: hwy/foreach_target.h re-includes it with
// HWY_NAMESPACE set to each target's namespace; the table at the end is
// compiled once (HWY_ONCE).
//
// Per key block (block_tokens keys of one kv head; K stored transposed,
// [head_dim][block_tokens], V as rows, [block_tokens][head_dim]):
//  1. scores: register tiles of up to 4 query heads x kC vectors of keys,
//     one pass over head_dim with a broadcast query element per head (no
//     horizontal sums: keys lie along the lanes);
//  2. online softmax per head, vectorised over the block's keys;
//  3. acc += P.V: tiles of up to 4 heads x kC vectors of head_dim, each V
//     row loaded once per 4 heads.
// The next block's K and V rows are prefetched while one is computed.
// bf16 K/V rows are widened in registers (bf16 is the top half of fp32).
// head_dim need not be a multiple of the vector length: the last
// head_dim % lanes elements of a row are done in scalar code, so that no
// load reads past a row.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/internal/hwy_targets.h"  // before foreach_target.h

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/paged_decode_hwy.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/internal/hwy_exp-inl.h"
#include "kernels/internal/paged_decode_hwy.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::internal {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using D = hn::ScalableTag<float>;
using V = hn::Vec<D>;

constexpr int64_t kL = HWY_LANES(float);
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kH = 4;  // query heads per register tile
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_SSE4 || HWY_TARGET == HWY_EMU128
constexpr int kC = 2;  // 16 vector registers: 8 accumulators
#else
constexpr int kC = 4;  // 32 vector registers: 16 accumulators
#endif

HWY_INLINE V LoadRow(D d, const float* HWY_RESTRICT p) {
  return hn::LoadU(d, p);
}
HWY_INLINE V LoadRow(D d, const uint16_t* HWY_RESTRICT p) {
  const hn::RebindToUnsigned<D> du32;
  const hn::Rebind<uint16_t, D> du16;
  return hn::BitCast(
      d, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
}
inline float Scalar(float x) { return x; }
inline float Scalar(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// s[h * ss + c * kL + lane] = q[h] . key (c * kL + lane) for H query heads
// (rows hd apart) and NK vectors of keys, from a K block stored transposed:
// kt[e * bt + key] (the first key of the tile at kt). One broadcast of a
// query element per head and one load per key vector, no horizontal sums.
template <int H, int NK, typename T>
void Scores(const float* HWY_RESTRICT q, int64_t hd, const T* HWY_RESTRICT kt,
            int64_t bt, float* HWY_RESTRICT s, int64_t ss) {
  // Independent FMA chains: with few accumulators (one key vector, AVX-512)
  // even and odd elements get their own, so that FMA latency is hidden.
  constexpr int U = H * NK <= 4 ? 2 : 1;
  const D d;
  V acc[U][H][NK];
  for (int u = 0; u < U; ++u) {
    for (int h = 0; h < H; ++h) {
      for (int c = 0; c < NK; ++c) acc[u][h][c] = hn::Zero(d);
    }
  }
  int64_t e = 0;
  for (; e + U <= hd; e += U) {
    for (int u = 0; u < U; ++u) {
      V kv[NK];
      for (int c = 0; c < NK; ++c)
        kv[c] = LoadRow(d, kt + (e + u) * bt + c * kL);
      for (int h = 0; h < H; ++h) {
        const V qb = hn::Set(d, q[h * hd + e + u]);
        for (int c = 0; c < NK; ++c) {
          acc[u][h][c] = hn::MulAdd(qb, kv[c], acc[u][h][c]);
        }
      }
    }
  }
  for (; e < hd; ++e) {  // odd head_dim
    for (int c = 0; c < NK; ++c) {
      const V kv = LoadRow(d, kt + e * bt + c * kL);
      for (int h = 0; h < H; ++h) {
        acc[0][h][c] = hn::MulAdd(hn::Set(d, q[h * hd + e]), kv, acc[0][h][c]);
      }
    }
  }
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < NK; ++c) {
      V sum = acc[0][h][c];
      for (int u = 1; u < U; ++u) sum = hn::Add(sum, acc[u][h][c]);
      hn::StoreU(sum, d, s + h * ss + c * kL);
    }
  }
}

// The same for any block_tokens (not a multiple of the vector length):
// keys [lo, hi) of the block, one at a time.
template <typename T>
void ScoresScalar(const float* q, int64_t group, int64_t hd, const T* kt,
                  int64_t bt, int64_t lo, int64_t hi, float* s, int64_t ss) {
  for (int64_t h = 0; h < group; ++h) {
    for (int64_t j = lo; j < hi; ++j) {
      float dot = 0.0f;
      for (int64_t e = 0; e < hd; ++e)
        dot += q[h * hd + e] * Scalar(kt[e * bt + j]);
      s[h * ss + j] = dot;
    }
  }
}

// acc[h][0 .. C vectors) += sum_j p[h * ss + j] * v[j][0 .. C vectors) for
// H heads (acc rows hd apart) and nk keys (v rows hd apart).
template <int H, int C, typename T>
void Pv(const float* HWY_RESTRICT p, int64_t ss, int64_t nk,
        const T* HWY_RESTRICT v, int64_t hd, float* HWY_RESTRICT acc) {
  const D d;
  V a[H][C];
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < C; ++c) a[h][c] = hn::LoadU(d, acc + h * hd + c * kL);
  }
  for (int64_t j = 0; j < nk; ++j) {
    V vv[C];
    for (int c = 0; c < C; ++c) vv[c] = LoadRow(d, v + j * hd + c * kL);
    for (int h = 0; h < H; ++h) {
      const V w = hn::Set(d, p[h * ss + j]);
      for (int c = 0; c < C; ++c) a[h][c] = hn::MulAdd(w, vv[c], a[h][c]);
    }
  }
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < C; ++c) hn::StoreU(a[h][c], d, acc + h * hd + c * kL);
  }
}

template <typename T>
struct Tiles {
  using ScoresFn = void (*)(const float*, int64_t, const T*, int64_t, float*,
                            int64_t);
  using PvFn = void (*)(const float*, int64_t, int64_t, const T*, int64_t,
                        float*);
  static constexpr ScoresFn kScores[kH][4] = {
      {&Scores<1, 1, T>, &Scores<1, 2, T>, &Scores<1, 3, T>, &Scores<1, 4, T>},
      {&Scores<2, 1, T>, &Scores<2, 2, T>, &Scores<2, 3, T>, &Scores<2, 4, T>},
      {&Scores<3, 1, T>, &Scores<3, 2, T>, &Scores<3, 3, T>, &Scores<3, 4, T>},
      {&Scores<4, 1, T>, &Scores<4, 2, T>, &Scores<4, 3, T>, &Scores<4, 4, T>}};
  static constexpr PvFn kPv[kH][4] = {
      {&Pv<1, 1, T>, &Pv<1, 2, T>, &Pv<1, 3, T>, &Pv<1, 4, T>},
      {&Pv<2, 1, T>, &Pv<2, 2, T>, &Pv<2, 3, T>, &Pv<2, 4, T>},
      {&Pv<3, 1, T>, &Pv<3, 2, T>, &Pv<3, 3, T>, &Pv<3, 4, T>},
      {&Pv<4, 1, T>, &Pv<4, 2, T>, &Pv<4, 3, T>, &Pv<4, 4, T>}};
};

// Online-softmax step of one head over the scores row[lo .. hi) of a key
// block (row holds ss floats, a whole number of vectors): updates m and l,
// turns row[lo .. hi) into exp(score - m) (the rest of the row, keys not
// attended or not written yet, into zeros) and returns the factor by which
// the head's previous accumulator must be scaled.
float SoftmaxRow(float* HWY_RESTRICT row, int64_t lo, int64_t hi, float* m,
                 float* l) {
  const D d;
  const int64_t v0 = lo / kL * kL, v1 = (hi + kL - 1) / kL * kL;
  for (int64_t e = v0; e < lo; ++e) row[e] = kNegInf;
  for (int64_t e = hi; e < v1; ++e) row[e] = kNegInf;
  V mx = hn::Set(d, kNegInf);
  for (int64_t e = v0; e < v1; e += kL) mx = hn::Max(mx, hn::LoadU(d, row + e));
  const float m_new = std::max(*m, hn::GetLane(hn::MaxOfLanes(d, mx)));
  const V base = hn::Set(d, m_new);
  V sum = hn::Zero(d);
  for (int64_t e = v0; e < v1; e += kL) {
    const V p = Exp(d, hn::Sub(hn::LoadU(d, row + e), base));
    hn::StoreU(p, d, row + e);
    sum = hn::Add(sum, p);
  }
  const float alpha = *m == kNegInf ? 0.0f : std::exp(*m - m_new);
  *l = *l * alpha + hn::GetLane(hn::SumOfLanes(d, sum));
  *m = m_new;
  return alpha;
}

void Scale(float* HWY_RESTRICT a, int64_t n, float alpha) {
  const D d;
  const V f = hn::Set(d, alpha);
  int64_t e = 0;
  for (; e + kL <= n; e += kL)
    hn::StoreU(hn::Mul(hn::LoadU(d, a + e), f), d, a + e);
  for (; e < n; ++e) a[e] *= alpha;
}

// Scores, softmax and P.V of one kv head's `group` query heads over keys
// [lo, hi) of one block (kt: the head's K part, v: its V part); s: scores
// rows ss floats apart; m, l, acc: those heads' partial result.
template <typename T>
void BlockStep(const float* HWY_RESTRICT q, int64_t group, int64_t hd,
               int64_t bt, const T* HWY_RESTRICT kt, const T* HWY_RESTRICT v,
               int64_t lo, int64_t hi, float* HWY_RESTRICT s, int64_t ss,
               float* m, float* l, float* acc) {
  const int64_t nv = hd / kL;
  // 1. Scores of the key vectors that hold [lo, hi).
  if (bt % kL == 0) {
    const int64_t c0 = lo / kL, c1 = (hi + kL - 1) / kL;
    for (int64_t h0 = 0; h0 < group; h0 += kH) {
      const int64_t nh = std::min<int64_t>(kH, group - h0);
      for (int64_t c = c0; c < c1; c += kC) {
        const int64_t nc = std::min<int64_t>(kC, c1 - c);
        Tiles<T>::kScores[nh - 1][nc - 1](q + h0 * hd, hd, kt + c * kL, bt,
                                          s + h0 * ss + c * kL, ss);
      }
    }
  } else {
    ScoresScalar(q, group, hd, kt, bt, lo, hi, s, ss);
  }
  // 2. Online softmax per head.
  for (int64_t h = 0; h < group; ++h) {
    const float alpha = SoftmaxRow(s + h * ss, lo, hi, m + h, l + h);
    if (alpha != 1.0f) Scale(acc + h * hd, hd, alpha);
  }
  // 3. acc += P.V over the keys [lo, hi).
  for (int64_t h0 = 0; h0 < group; h0 += kH) {
    const int64_t nh = std::min<int64_t>(kH, group - h0);
    for (int64_t c0 = 0; c0 < nv; c0 += kC) {
      const int64_t nc = std::min<int64_t>(kC, nv - c0);
      Tiles<T>::kPv[nh - 1][nc - 1](s + h0 * ss + lo, ss, hi - lo,
                                    v + lo * hd + c0 * kL, hd,
                                    acc + h0 * hd + c0 * kL);
    }
  }
  for (int64_t e = nv * kL; e < hd; ++e) {
    for (int64_t h = 0; h < group; ++h) {
      float a = acc[h * hd + e];
      for (int64_t jj = lo; jj < hi; ++jj) {
        a += s[h * ss + jj] * Scalar(v[jj * hd + e]);
      }
      acc[h * hd + e] = a;
    }
  }
}

template <typename T>
void SpanT(const KvPool& pool, const DecodeSpan& sp, const DecodePartial& out) {
  const KvPoolLayout& lay = pool.layout;
  const int64_t hd = lay.head_dim, bt = lay.block_tokens, group = sp.group;
  const int64_t rows = sp.num_kv * group;
  const int64_t part = bt * hd;  // elements of one kv head's block part
  const int64_t ss = DecodeScoreStride(lay);
  const T* kbase = static_cast<const T*>(pool.k_base);
  const T* vbase = static_cast<const T*>(pool.v_base);
  std::fill(out.m, out.m + rows, kNegInf);
  std::fill(out.l, out.l + rows, 0.0f);
  std::fill(out.acc, out.acc + rows * hd, 0.0f);
  // Both halves of a block start at the same element offset; the span's kv
  // heads' parts follow each other there.
  auto span_block = [&](int64_t j) {
    return sp.block_table[j / bt] * lay.block_elements() + sp.kv_head * part;
  };
  for (int64_t j = sp.first; j < sp.last;) {
    const int64_t lo = j % bt;
    const int64_t hi = std::min(bt, lo + sp.last - j);
    const int64_t at = span_block(j);
    const int64_t next_j = j + hi - lo;
    // The next block is elsewhere in the pool (blocks are scattered): each
    // kv head's part of it is requested while the same part of this block
    // is computed; the hardware prefetcher does not cross into it. Measured
    // on Zen 4: without it a step took 13-15% longer; two or three blocks
    // ahead were no faster.
    const char* kn = nullptr;
    const char* vn = nullptr;
    if (next_j < sp.last) {
      kn = reinterpret_cast<const char*>(kbase + span_block(next_j));
      vn = reinterpret_cast<const char*>(vbase + span_block(next_j));
    }
    for (int64_t g = 0; g < sp.num_kv; ++g) {
      if (kn != nullptr) {
        const int64_t bytes = part * int64_t{sizeof(T)};
        for (int64_t b = g * bytes; b < (g + 1) * bytes; b += 64) {
          hwy::Prefetch(kn + b);
          hwy::Prefetch(vn + b);
        }
      }
      const int64_t r = g * group;
      BlockStep(sp.q + r * hd, group, hd, bt, kbase + at + g * part,
                vbase + at + g * part, lo, hi, out.scratch, ss, out.m + r,
                out.l + r, out.acc + r * hd);
    }
    j = next_j;
  }
}

}  // namespace

void HwyDecodeSpanImpl(const KvPool& pool, const DecodeSpan& span,
                       const DecodePartial& out) {
  if (pool.layout.dtype == KvPoolLayout::Dtype::kBf16) {
    SpanT<uint16_t>(pool, span, out);
  } else {
    SpanT<float>(pool, span, out);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attn::kernels::internal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attn::kernels::internal {

namespace {

struct Entry {
  int64_t target;
  DecodeSpanFn fn;
};

// Best first: Highway's lower bits are better targets.
const Entry kSpans[] = {
#if HWY_TARGETS & HWY_AVX3
    {HWY_AVX3, &N_AVX3::HwyDecodeSpanImpl},
#endif
#if HWY_TARGETS & HWY_AVX2
    {HWY_AVX2, &N_AVX2::HwyDecodeSpanImpl},
#endif
#if HWY_TARGETS & HWY_SSE4
    {HWY_SSE4, &N_SSE4::HwyDecodeSpanImpl},
#endif
#if HWY_TARGETS & HWY_NEON
    {HWY_NEON, &N_NEON::HwyDecodeSpanImpl},
#endif
#if HWY_TARGETS & HWY_EMU128
    {HWY_EMU128, &N_EMU128::HwyDecodeSpanImpl},
#endif
};

}  // namespace

DecodeSpanFn HwyDecodeSpan(int64_t hwy_target) {
  for (const Entry& e : kSpans) {
    if (e.target == hwy_target) return e.fn;
  }
  return nullptr;
}

DecodeSpanFn BestHwyDecodeSpan() {
  const int64_t supported = hwy::SupportedTargets();
  for (const Entry& e : kSpans) {
    if ((e.target & supported) != 0) return e.fn;
  }
  return kSpans[sizeof(kSpans) / sizeof(kSpans[0]) - 1].fn;
}

}  // namespace attn::kernels::internal
#endif  // HWY_ONCE
