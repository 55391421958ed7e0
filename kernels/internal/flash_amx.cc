// The AMX-BF16 unit of the flash core and its packing of K and V: S^T =
// K.Q^T and O^T = V^T.P^T as tile products (tdpbf16ps, fp32 accumulation),
// key-major like the fp32 unit, the column-wise softmax in AVX-512 fp32.
// x86 only; other CPUs link flash_no_x86.cc and run the scalar unit.
#if defined(__x86_64__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "kernels/internal/flash_simd.h"
#include "kernels/internal/flash_tiles.h"

ATTN_FLASH_TARGET_BEGIN(ATTN_FLASH_AVX512_BF16)

namespace attn::kernels::internal::flash {

// AMX bf16 tile kernels (Sapphire Rapids and later), key-major: the unit
// computes S^T = K.Q^T and O^T = V^T.P^T. Every tile register is configured
// as 16 rows x 64 bytes: A = 16 rows x 32 bf16 (K rows, V^T rows), B = 16
// pairs x 16 query columns x 2 bf16 (the VNNI layout of Q^T and P^T), C =
// 16 x 16 fp32. Work goes in 32 x 32 output blocks: C tiles 0-3, A tiles
// 4-5, B tiles 6-7.
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")
namespace {

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

// st[32 * key_chunks][32 * q_pairs] (row stride BQ) = k16 . qt, with k16
// [keys][hd] bf16 rows and qt the query block as dimension pairs
// [hd/2][BQ] (32-bit words). REQUIRES: hd % 32 == 0.
__attribute__((noinline)) void QkAmx(const uint16_t* k16, int64_t hd,
                                     const float* qt, int key_chunks,
                                     int q_pairs, float* st) {
  CompilerBarrier();
  for (int kc = 0; kc < key_chunks; ++kc) {
    const uint16_t* a0 = k16 + kc * 32 * hd;
    const uint16_t* a1 = a0 + 16 * hd;
    for (int qp = 0; qp < q_pairs; ++qp) {
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t d = 0; d < hd; d += 32) {
        _tile_loadd(4, a0 + d, hd * 2);
        _tile_loadd(5, a1 + d, hd * 2);
        const float* b = qt + (d / 2) * BQ + qp * 32;
        _tile_loadd(6, b, BQ * 4);
        _tile_loadd(7, b + 16, BQ * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      float* c = st + kc * 32 * BQ + qp * 32;
      _tile_stored(0, c, BQ * 4);
      _tile_stored(1, c + 16, BQ * 4);
      _tile_stored(2, c + 16 * BQ, BQ * 4);
      _tile_stored(3, c + 16 * BQ + 16, BQ * 4);
    }
  }
  CompilerBarrier();
}

// ot[hd][32 * q_pairs] (row stride BQ) += vt . p16 over 32 * key_chunks
// keys, with vt = V^T [hd][BK] bf16 and p16 the probabilities as key pairs
// [BK/2][BQ][2]. REQUIRES: hd % 32 == 0.
__attribute__((noinline)) void PvAmx(const uint16_t* vt, int64_t hd,
                                     const uint16_t* p16, int key_chunks,
                                     int q_pairs, float* ot) {
  CompilerBarrier();
  for (int64_t c0 = 0; c0 < hd; c0 += 32) {
    const uint16_t* a0 = vt + c0 * BK;
    const uint16_t* a1 = a0 + 16 * BK;
    for (int qp = 0; qp < q_pairs; ++qp) {
      float* c = ot + c0 * BQ + qp * 32;
      _tile_loadd(0, c, BQ * 4);
      _tile_loadd(1, c + 16, BQ * 4);
      _tile_loadd(2, c + 16 * BQ, BQ * 4);
      _tile_loadd(3, c + 16 * BQ + 16, BQ * 4);
      for (int kc = 0; kc < key_chunks; ++kc) {
        _tile_loadd(4, a0 + kc * 32, BK * 2);
        _tile_loadd(5, a1 + kc * 32, BK * 2);
        const uint16_t* b = p16 + kc * 32 * BQ + qp * 64;
        _tile_loadd(6, b, BQ * 4);
        _tile_loadd(7, b + 32, BQ * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c, BQ * 4);
      _tile_stored(1, c + 16, BQ * 4);
      _tile_stored(2, c + 16 * BQ, BQ * 4);
      _tile_stored(3, c + 16 * BQ + 16, BQ * 4);
    }
  }
  CompilerBarrier();
}

}  // namespace

void AmxConfigure() { _tile_loadconfig(&kTileConfig); }

void AmxRelease() { _tile_release(); }

#pragma GCC pop_options

namespace {

// Interleaves the bf16 of two 16-lane halves: element 2i from lane i of
// the low half, 2i + 1 from lane i of the high half.
inline __m512i InterleavePairs(__m512 lo, __m512 hi) {
  const __m512i perm = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11,
                                        26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                        5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(perm, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// Online-softmax step over the transposed score tile st[nk][BQ], NV vectors
// of 16 query rows (SoftmaxColumnsBegin), writing the probabilities as bf16
// key pairs p16 [rows/2][BQ][2]; keys nk .. rows - 1 get zero.
template <int NV>
void SoftmaxPairs(const float* st, int64_t nk, int64_t rows, float* m, float* l,
                  float* alpha, uint16_t* p16) {
  __m512 base[NV], sum[NV];
  SoftmaxColumnsBegin<NV>(st, nk, m, l, alpha, base, sum);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t j = 0; j < rows; j += 2) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const float* at = st + j * BQ + 16 * v;
      const __m512 p0 =
          j < nk ? Exp512(_mm512_sub_ps(_mm512_load_ps(at), base[v])) : zero;
      const __m512 p1 =
          j + 1 < nk ? Exp512(_mm512_sub_ps(_mm512_load_ps(at + BQ), base[v]))
                     : zero;
      sum[v] = _mm512_add_ps(_mm512_add_ps(sum[v], p0), p1);
      _mm512_storeu_si512(p16 + j * BQ + 32 * v, InterleavePairs(p0, p1));
    }
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) _mm512_store_ps(l + 16 * v, sum[v]);
}

using SoftmaxPairsFn = void (*)(const float*, int64_t, int64_t, float*, float*,
                                float*, uint16_t*);
constexpr SoftmaxPairsFn kSoftmaxPairs[4] = {SoftmaxPairs<1>, SoftmaxPairs<2>,
                                             SoftmaxPairs<3>, SoftmaxPairs<4>};

}  // namespace

void PackAmxBlock(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                  uint16_t* k_out, uint16_t* v_out) {
  const int64_t j0 = kb * BK;
  const int64_t nk = std::min(BK, s.kv_len - j0);
  const int64_t width = std::min(BK, CeilDiv(nk, 32) * 32);
  const float* k_base = s.k + j0 * s.kv_stride + g * hd;
  const float* v_base = s.v + j0 * s.kv_stride + g * hd;
  std::memset(k_out + nk * hd, 0, (width - nk) * hd * sizeof(uint16_t));
  for (int64_t c = 0; c < nk; ++c) {
    const float* k = k_base + c * s.kv_stride;
    for (int64_t d = 0; d < hd; d += 32) {
      _mm512_storeu_si512(k_out + c * hd + d, (__m512i)_mm512_cvtne2ps_pbh(
                                                  _mm512_loadu_ps(k + d + 16),
                                                  _mm512_loadu_ps(k + d)));
    }
  }
  // V^T: 16 keys x 16 dimensions transposed per half of a 32-key chunk,
  // then one bf16 row of 32 keys per dimension.
  alignas(64) float vt[2][16][16];
  for (int64_t c0 = 0; c0 < width; c0 += 32) {
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
      for (int half = 0; half < 2; ++half) {
        __m512 rows[16];
        for (int r = 0; r < 16; ++r) {
          const int64_t c = c0 + 16 * half + r;
          rows[r] = c < nk ? _mm512_loadu_ps(v_base + c * s.kv_stride + d0)
                           : _mm512_setzero_ps();
        }
        Transpose16x16(rows, 16, &vt[half][0][0], 16);
      }
      for (int d = 0; d < 16; ++d) {
        _mm512_storeu_si512(
            v_out + (d0 + d) * BK + c0,
            (__m512i)_mm512_cvtne2ps_pbh(_mm512_load_ps(vt[1][d]),
                                         _mm512_load_ps(vt[0][d])));
      }
    }
  }
}

// One unit on the AMX path, key-major as F32Unit: S^T = K.Q^T tiles, the
// column-wise online softmax, O^T += V^T.P^T tiles into the transposed
// output t.pv [hd][BQ], which is normalised and transposed into the context
// rows once at the end. Key blocks are processed in whole 32-key chunks (the
// packed pad keys and their probabilities are zero), query columns in pairs
// of 16 (pad queries are zero and their results ignored). REQUIRES:
// hd % 32 == 0, AmxConfigure() on this thread.
void AmxUnit(const FlashSequence& s, const uint16_t* packed_k,
             const uint16_t* packed_v, int64_t h, int64_t g, int64_t i0,
             int64_t nq, int64_t hd, int64_t ctx_stride, const ThreadTiles& t,
             bool write_mask) {
  const int nqv = static_cast<int>(CeilDiv(nq, 16));
  const int q_pairs = static_cast<int>(CeilDiv(nq, 32));
  const auto [min_limit, max_limit] = StartColumns(s, i0, nq, nqv, t);
  // Q^T as dimension pairs: bf16 rows of 32 dimensions, 16 x 16 words
  // transposed.
  const float* q_base = s.q + i0 * s.q_stride + h * hd;
  for (int v = 0; v < 2 * q_pairs; ++v) {
    for (int64_t d = 0; d < hd; d += 32) {
      __m512 rows[16];
      for (int r = 0; r < 16; ++r) {
        const int64_t i = 16 * v + r;
        const float* q = q_base + i * s.q_stride + d;
        rows[r] = i < nq ? (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16),
                                                       _mm512_loadu_ps(q))
                         : _mm512_setzero_ps();
      }
      Transpose16x16(rows, 16, t.qt + (d / 2) * BQ + 16 * v, BQ);
    }
  }
  // Query columns past nqv vectors keep zero probabilities.
  std::memset(t.p16, 0, BK * BQ * sizeof(uint16_t));
  std::memset(t.pv, 0, hd * BQ * sizeof(float));
  const int64_t kblocks = CeilDiv(max_limit, BK);
  const int64_t nkb_total = CeilDiv(s.kv_len, BK);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t kb = 0; kb < kblocks; ++kb) {
    const int64_t j0 = kb * BK;
    const int64_t nk = std::min(BK, max_limit - j0);
    const int chunks = static_cast<int>(CeilDiv(nk, 32));
    const int64_t block = g * nkb_total + kb;
    QkAmx(packed_k + block * hd * BK, hd, t.qt, chunks, q_pairs, t.s);
    if (s.mask_kind != MaskKind::kNone || j0 + nk > min_limit) {
      MaskColumns(s, i0, nq, j0, nk, nqv, min_limit, t);
    }
    kSoftmaxPairs[nqv - 1](t.s, nk, 32 * chunks, t.m, t.l, t.alpha, t.p16);
    // O^T *= alpha, skipped when no row's max moved (and on the first block,
    // where O^T is zero).
    bool rescale = false;
    for (int v = 0; v < nqv && kb > 0; ++v) {
      rescale |= _mm512_cmp_ps_mask(_mm512_load_ps(t.alpha + 16 * v), one,
                                    _CMP_NEQ_UQ) != 0;
    }
    for (int64_t c = 0; rescale && c < hd; ++c) {
      for (int v = 0; v < nqv; ++v) {
        float* o = t.pv + c * BQ + 16 * v;
        _mm512_store_ps(o, _mm512_mul_ps(_mm512_load_ps(o),
                                         _mm512_load_ps(t.alpha + 16 * v)));
      }
    }
    PvAmx(packed_v + block * hd * BK, hd, t.p16, chunks, q_pairs, t.pv);
  }
  // Context rows: O^T / l per query, transposed 16 x 16; rows that saw no
  // key are zero and, if write_mask, flagged in s.row_masked.
  float* const o_base = s.context + i0 * ctx_stride + h * hd;
  for (int v = 0; v < nqv; ++v) {
    const __m512 l = _mm512_load_ps(t.l + 16 * v);
    const __mmask16 live =
        _mm512_cmp_ps_mask(l, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512 inv = _mm512_maskz_div_ps(live, one, l);
    const int cols = static_cast<int>(std::min<int64_t>(16, nq - 16 * v));
    for (int64_t d0 = 0; d0 < hd; d0 += 16) {
      __m512 rows[16];
      for (int k = 0; k < 16; ++k) {
        rows[k] = _mm512_maskz_mul_ps(
            live, _mm512_load_ps(t.pv + (d0 + k) * BQ + 16 * v), inv);
      }
      Transpose16x16(rows, cols, o_base + 16 * v * ctx_stride + d0, ctx_stride);
    }
    for (int r = 0; write_mask && r < cols; ++r) {
      s.row_masked[i0 + 16 * v + r] = ((live >> r) & 1) != 0 ? 0 : 1;
    }
  }
}

bool RequestAmxPermission() {
  static const bool granted = [] {
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

}  // namespace attn::kernels::internal::flash

ATTN_FLASH_TARGET_END

#endif  // defined(__x86_64__)
