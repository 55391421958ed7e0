// The Highway decode span (paged_decode_hwy.h). This file is compiled once
// per Highway target: hwy/foreach_target.h re-includes it with
// HWY_NAMESPACE set to each target's namespace; the table at the end is
// compiled once (HWY_ONCE).
//
// K blocks are stored transposed ([head_dim][block_tokens]), V as rows
// ([block_tokens][head_dim]). When a block holds whole key vectors, a span
// goes through its keys in chunks of about 256 (DecodeChunkBlocks):
//  1. scores: register tiles of up to 4 query heads x kC key vectors, which
//     may lie in different blocks, one pass over head_dim with a broadcast
//     query element per head serving the whole tile (no horizontal sums:
//     keys lie along the lanes); the next tile's K lines are requested
//     while one is computed;
//  2. one online-softmax step per head for the chunk;
//  3. acc += P.V block by block: tiles of up to 4 heads x kC vectors of
//     head_dim, each V row loaded once per 4 heads, the next block's V
//     requested while one is computed.
// Otherwise block by block, with scalar scores. bf16 K/V rows are widened
// in registers (bf16 is the top half of fp32). head_dim need not be a
// multiple of the vector length: the last head_dim % lanes elements of a
// row are done in scalar code, so that no load reads past a row.
//
// Measured on AMD EPYC (Zen 5 class), 64 sessions x 2048 keys, 4 kv heads
// x 128, 2 threads, against the per-block online softmax this replaced
// (one vector of keys per score tile on AVX-512, a horizontal max and sum
// per block and head), three interleaved runs: attention 1.16-1.19x as
// fast with an fp32 cache, 1.11-1.24x with bf16; PvPaired a further ~5%.

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
// (rows hd apart) and NK vectors of keys, from K blocks stored transposed:
// key vector c's element e is at cols[c][e * bt] (the vectors may lie in
// different blocks). One broadcast of a query element per head serves all
// NK key vectors; no horizontal sums. pf (null: none): NK column pointers of
// the next tile, whose lines are requested one per element row, spread over
// the loop.
template <int H, int NK, typename T>
void Scores(const float* HWY_RESTRICT q, int64_t hd, const T* const* cols,
            int64_t bt, float* HWY_RESTRICT s, int64_t ss, const T* const* pf) {
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
    if (pf != nullptr) {
      for (int c = 0; c < NK; ++c) hwy::Prefetch(pf[c] + e * bt);
    }
    for (int u = 0; u < U; ++u) {
      V kv[NK];
      for (int c = 0; c < NK; ++c) kv[c] = LoadRow(d, cols[c] + (e + u) * bt);
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
      const V kv = LoadRow(d, cols[c] + e * bt);
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

// The bf16 P.V tile when head_dim is a multiple of 2 * kL: each load takes
// 2 * kL bf16 elements as kL 32-bit words; the even elements widen with a
// shift and the odd ones with a mask (bf16 is the top half of fp32), with no
// lane shuffles. Accumulator vector pair (2i, 2i + 1) then holds the even
// and odd elements of its 2 * kL dims (see UnpairRows). C: fp32 vectors, even.
template <int H, int C>
void PvPaired(const float* HWY_RESTRICT p, int64_t ss, int64_t nk,
              const uint16_t* HWY_RESTRICT v, int64_t hd,
              float* HWY_RESTRICT acc) {
  const D d;
  const hn::RebindToUnsigned<D> du;
  const auto hi_mask = hn::Set(du, 0xFFFF0000u);
  V a[H][C];
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < C; ++c) a[h][c] = hn::LoadU(d, acc + h * hd + c * kL);
  }
  for (int64_t j = 0; j < nk; ++j) {
    V vv[C];
    for (int c = 0; c < C; c += 2) {
      const auto w =
          hn::LoadU(du, reinterpret_cast<const uint32_t*>(v + j * hd + c * kL));
      vv[c] = hn::BitCast(d, hn::ShiftLeft<16>(w));
      vv[c + 1] = hn::BitCast(d, hn::And(w, hi_mask));
    }
    for (int h = 0; h < H; ++h) {
      const V wgt = hn::Set(d, p[h * ss + j]);
      for (int c = 0; c < C; ++c) a[h][c] = hn::MulAdd(wgt, vv[c], a[h][c]);
    }
  }
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < C; ++c) hn::StoreU(a[h][c], d, acc + h * hd + c * kL);
  }
}

// Restores the element order of accumulator rows written by PvPaired: in
// each group of 2 * kL floats, the even elements come first, then the odd.
void UnpairRows(float* acc, int64_t rows, int64_t hd) {
  float tmp[2 * kL];
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = 0; e < hd; e += 2 * kL) {
      float* g = acc + r * hd + e;
      for (int64_t k = 0; k < kL; ++k) {
        tmp[2 * k] = g[k];
        tmp[2 * k + 1] = g[kL + k];
      }
      std::copy(tmp, tmp + 2 * kL, g);
    }
  }
}

// True when the bf16 P.V runs PvPaired.
template <typename T>
bool Paired(int64_t hd) {
  return sizeof(T) == 2 && hd % (2 * kL) == 0;
}

template <typename T>
struct Tiles {
  using ScoresFn = void (*)(const float*, int64_t, const T* const*, int64_t,
                            float*, int64_t, const T* const*);
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
  using PairedFn = void (*)(const float*, int64_t, int64_t, const uint16_t*,
                            int64_t, float*);
  // [heads - 1][vectors / 2 - 1]
  static constexpr PairedFn kPaired[kH][2] = {
      {&PvPaired<1, 2>, &PvPaired<1, 4>},
      {&PvPaired<2, 2>, &PvPaired<2, 4>},
      {&PvPaired<3, 2>, &PvPaired<3, 4>},
      {&PvPaired<4, 2>, &PvPaired<4, 4>}};
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

// acc += P.V of `group` query heads over keys [lo, hi) of one block's V
// part (v: [block_tokens][hd]); p[h * ss + jj]: head h's weight of the
// block's key jj.
template <typename T>
void PvBlock(const float* HWY_RESTRICT p, int64_t ss, int64_t group, int64_t hd,
             const T* HWY_RESTRICT v, int64_t lo, int64_t hi,
             float* HWY_RESTRICT acc) {
  const int64_t nv = hd / kL;
  for (int64_t h0 = 0; h0 < group; h0 += kH) {
    const int64_t nh = std::min<int64_t>(kH, group - h0);
    for (int64_t c0 = 0; c0 < nv; c0 += kC) {
      const int64_t nc = std::min<int64_t>(kC, nv - c0);
      if constexpr (sizeof(T) == 2) {
        if (Paired<T>(hd)) {  // nc is even: kC and nv are
          Tiles<T>::kPaired[nh - 1][nc / 2 - 1](p + h0 * ss + lo, ss, hi - lo,
                                                v + lo * hd + c0 * kL, hd,
                                                acc + h0 * hd + c0 * kL);
          continue;
        }
      }
      Tiles<T>::kPv[nh - 1][nc - 1](p + h0 * ss + lo, ss, hi - lo,
                                    v + lo * hd + c0 * kL, hd,
                                    acc + h0 * hd + c0 * kL);
    }
  }
  for (int64_t e = nv * kL; e < hd; ++e) {
    for (int64_t h = 0; h < group; ++h) {
      float a = acc[h * hd + e];
      for (int64_t jj = lo; jj < hi; ++jj) {
        a += p[h * ss + jj] * Scalar(v[jj * hd + e]);
      }
      acc[h * hd + e] = a;
    }
  }
}

// Requests the `bytes` bytes at p, one cache line at a time.
void PrefetchRun(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) hwy::Prefetch(c + b);
}

// The span for any block_tokens (not a multiple of the vector length):
// block by block, scalar scores, online softmax per block.
template <typename T>
void SpanPerBlock(const KvPool& pool, const DecodeSpan& sp,
                  const DecodePartial& out) {
  const KvPoolLayout& lay = pool.layout;
  const int64_t hd = lay.head_dim, bt = lay.block_tokens, group = sp.group;
  const int64_t part = bt * hd;  // elements of one kv head's block part
  const int64_t ss = DecodeScoreStride(lay);
  const T* kbase = static_cast<const T*>(pool.k_base);
  const T* vbase = static_cast<const T*>(pool.v_base);
  for (int64_t j = sp.first; j < sp.last;) {
    const int64_t lo = j % bt;
    const int64_t hi = std::min(bt, lo + sp.last - j);
    const int64_t at =
        sp.block_table[j / bt] * lay.block_elements() + sp.kv_head * part;
    for (int64_t g = 0; g < sp.num_kv; ++g) {
      const int64_t r = g * group;
      const T* kt = kbase + at + g * part;
      const T* v = vbase + at + g * part;
      float* s = out.scratch;
      ScoresScalar(sp.q + r * hd, group, hd, kt, bt, lo, hi, s, ss);
      for (int64_t h = 0; h < group; ++h) {
        const float alpha =
            SoftmaxRow(s + h * ss, lo, hi, out.m + r + h, out.l + r + h);
        if (alpha != 1.0f) Scale(out.acc + (r + h) * hd, hd, alpha);
      }
      PvBlock(s, ss, group, hd, v, lo, hi, out.acc + r * hd);
    }
    j += hi - lo;
  }
}

// The span when a block holds whole key vectors, in chunks of up to
// DecodeChunkBlocks blocks:
//  1. the scores of every query head of the span against the chunk's keys,
//     in register tiles of up to kC key vectors that may lie in different
//     blocks (each query broadcast serves them all); the next tile's K
//     lines are requested while one is computed;
//  2. one online-softmax step per head for the whole chunk (its horizontal
//     max and sum, and the rescaling of the accumulator, once per chunk
//     instead of once per block);
//  3. acc += P.V block by block, the next block's V requested while one is
//     computed.
template <typename T>
void SpanChunked(const KvPool& pool, const DecodeSpan& sp,
                 const DecodePartial& out) {
  const KvPoolLayout& lay = pool.layout;
  const int64_t hd = lay.head_dim, bt = lay.block_tokens, group = sp.group;
  const int64_t rows = sp.num_kv * group;
  const int64_t part = bt * hd;  // elements of one kv head's block part
  const int64_t be = lay.block_elements();
  const int64_t ss = DecodeChunkStride(lay);
  const int64_t cb = DecodeChunkBlocks(lay);
  const int64_t vpb = bt / kL;  // key vectors per block
  const T* kbase = static_cast<const T*>(pool.k_base) + sp.kv_head * part;
  const T* vbase = static_cast<const T*>(pool.v_base) + sp.kv_head * part;
  float* s = out.scratch;
  // Key vector `c` (counted from the span's first block) of kv head g.
  const int64_t b_first = sp.first / bt;
  const int64_t b_end = (sp.last - 1) / bt + 1;
  auto column = [&](int64_t c, int64_t g) {
    return kbase + sp.block_table[b_first + c / vpb] * be + g * part +
           (c % vpb) * kL;
  };
  const int64_t c_end = ((sp.last - b_first * bt) + kL - 1) / kL;
  for (int64_t b0 = b_first; b0 < b_end; b0 += cb) {
    const int64_t b1 = std::min(b_end, b0 + cb);
    const int64_t base = b0 * bt;  // the chunk's first key position
    const int64_t lo = std::max(sp.first, base) - base;
    const int64_t hi = std::min(sp.last, b1 * bt) - base;
    // 1. Scores: chunk key vectors [v0, v1), counted from the chunk.
    const int64_t v0 = lo / kL, v1 = (hi + kL - 1) / kL;
    const int64_t off = (b0 - b_first) * vpb;  // chunk's first span vector
    for (int64_t g = 0; g < sp.num_kv; ++g) {
      for (int64_t c = v0; c < v1; c += kC) {
        const int64_t nc = std::min<int64_t>(kC, v1 - c);
        const T* cols[kC];
        const T* pf[kC];
        for (int64_t i = 0; i < nc; ++i) {
          cols[i] = column(off + c + i, g);
          // The tile kC vectors on (the next chunk's first ones at the end
          // of this one), or the first tile of the next kv head.
          const int64_t n = off + c + kC + i;
          pf[i] = n < c_end ? column(n, g) : cols[i];
        }
        for (int64_t h0 = 0; h0 < group; h0 += kH) {
          const int64_t nh = std::min<int64_t>(kH, group - h0);
          const int64_t r = g * group + h0;
          Tiles<T>::kScores[nh - 1][nc - 1](sp.q + r * hd, hd, cols, bt,
                                            s + r * ss + c * kL, ss,
                                            h0 == 0 ? pf : nullptr);
        }
      }
    }
    // The chunk's first V block, while the softmax runs.
    PrefetchRun(vbase + sp.block_table[b0] * be,
                sp.num_kv * part * int64_t{sizeof(T)});
    // 2. Online softmax per head over the chunk.
    for (int64_t r = 0; r < rows; ++r) {
      const float alpha = SoftmaxRow(s + r * ss, lo, hi, out.m + r, out.l + r);
      if (alpha != 1.0f) Scale(out.acc + r * hd, hd, alpha);
    }
    // 3. P.V, block by block.
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t blo = std::max(lo, (b - b0) * bt) - (b - b0) * bt;
      const int64_t bhi = std::min(hi, (b - b0 + 1) * bt) - (b - b0) * bt;
      const T* v = vbase + sp.block_table[b] * be;
      if (b + 1 < b1) {
        PrefetchRun(vbase + sp.block_table[b + 1] * be,
                    sp.num_kv * part * int64_t{sizeof(T)});
      }
      for (int64_t g = 0; g < sp.num_kv; ++g) {
        const int64_t r = g * group;
        PvBlock(s + r * ss + (b - b0) * bt, ss, group, hd, v + g * part, blo,
                bhi, out.acc + r * hd);
      }
    }
  }
}

template <typename T>
void SpanT(const KvPool& pool, const DecodeSpan& sp, const DecodePartial& out) {
  const int64_t rows = sp.num_kv * sp.group;
  std::fill(out.m, out.m + rows, kNegInf);
  std::fill(out.l, out.l + rows, 0.0f);
  std::fill(out.acc, out.acc + rows * pool.layout.head_dim, 0.0f);
  if (pool.layout.block_tokens % kL == 0) {
    SpanChunked<T>(pool, sp, out);
  } else {
    SpanPerBlock<T>(pool, sp, out);
  }
  if (Paired<T>(pool.layout.head_dim)) {
    UnpairRows(out.acc, rows, pool.layout.head_dim);
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
