// The AMX-BF16 unit of the flash core: Q.K^T and P.V as tile products
// (tdpbf16ps, fp32 accumulation), the softmax in AVX-512 fp32.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "kernels/internal/flash_simd.h"
#include "kernels/internal/flash_tiles.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized (_mm512_undefined_*).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace attn::kernels::internal::flash {

// AMX bf16 tile kernels (Sapphire Rapids and later). Every tile register is
// configured as 16 rows x 64 bytes: A = 16 rows x 32 bf16, B = 16 key (or
// dim) pairs x 16 columns x 2 bf16 (the VNNI layout of the packed K and V
// blocks), C = 16 x 16 fp32. Work goes in 32 x 32 output blocks: C tiles
// 0-3, A tiles 4-5, B tiles 6-7.
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

}  // namespace

void AmxConfigure() { _tile_loadconfig(&kTileConfig); }

void AmxRelease() { _tile_release(); }

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

bool RequestAmxPermission() {
  static const bool granted = [] {
    constexpr int kArchReqXcompPerm = 0x1023;
    constexpr int kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

}  // namespace attn::kernels::internal::flash

#pragma GCC diagnostic pop
#pragma GCC pop_options
