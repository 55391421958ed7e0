#include "kernels/internal/flash_core.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/internal/bf16_calibration.h"
#include "kernels/internal/flash_hwy.h"
#include "kernels/internal/flash_tiles.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels::internal {
namespace {

// The AMX unit works in 32-key chunks; sequences with fewer keys than this
// run faster on the fp32 unit (measured: 64 sequences of 16 tokens at
// d_model 256, 0.84 ms against 0.93 ms; at 32 keys AMX wins, 0.80 ms
// against 0.89 ms).
constexpr int64_t kAmxMinKeys = 17;

// Which unit computes a sequence, and how its keys and values are packed.
enum class UnitKind {
  kAmx,        // bf16 tiles; PackAmxBlock
  kBf16,       // vdpbf16ps; PackBf16Block
  kF32Packed,  // fp32; PackF32Block
  kF32Direct,  // fp32, keys read in place (no packing)
};

using flash::BK;
using flash::BQ;
using flash::CeilDiv;
using flash::RowLimit;

// One work unit: a block of query rows of one head of one sequence.
struct Unit {
  int32_t seq;
  int32_t head;
  int32_t qblock;
  int64_t cost;  // attended key blocks x rows, for scheduling
};

}  // namespace

FlashCore::FlashCore(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     ComputeDType dtype)
    : num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype) {
  absl::StatusOr<CoreChoice> choice = ChooseCore(dtype, head_dim);
  choice_ = choice.ok() ? *std::move(choice) : DefaultCore(dtype, head_dim);
  description_ = choice_.name;
  if (choice_.calibrate) {
    choice_.calibrate = false;
    const Bf16Calibration c = CalibrateBf16(num_heads, num_kv_heads, head_dim);
    if (c.min_keys == kBf16Never) {
      choice_.isa = CoreIsa::kAvx512;
      choice_.name = "avx512";
      description_ = absl::StrCat(
          "avx512 (calibrated, faster than avx512_bf16 "
          "at every length: ",
          c.Summary(), ")");
    } else {
      choice_.bf16_min_keys = c.min_keys;
      description_ =
          c.min_keys == 0
              ? absl::StrCat("avx512_bf16 (calibrated: ", c.Summary(), ")")
              : absl::StrCat("avx512_bf16 from ", c.min_keys,
                             " keys, avx512 below (calibrated: ", c.Summary(),
                             ")");
    }
  }
  isa_ = choice_.isa;
}

FlashCore::FlashCore(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                     ComputeDType dtype, CoreChoice choice)
    : num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      choice_(std::move(choice)),
      description_(choice_.name),
      isa_(choice_.isa) {}

absl::Status FlashCore::Forward(absl::Span<const FlashSequence> seqs) const {
  if (seqs.empty()) return absl::OkStatus();
  const int64_t hd = head_dim_;
  const int64_t hdp = (hd + 1) / 2 * 2;
  const int64_t group = num_heads_ / num_kv_heads_;
  const int64_t ctx_stride = num_heads_ * hd;
  const bool amx = isa_ == Isa::kAmxBf16;
  const bool bf16 = isa_ == Isa::kAvx512Bf16 || amx;
  const bool simd = isa_ != Isa::kScalar;
  // The fp32 unit: Highway's, or the AVX-512 one.
  const flash::F32UnitFn f32_unit =
      isa_ == Isa::kHwy ? choice_.hwy->unit : &flash::F32Unit;
  const int threads = std::max(1, omp_get_max_threads());
  auto kind = [&](const FlashSequence& s) {
    if (amx) {
      return s.kv_len >= kAmxMinKeys ? UnitKind::kAmx : UnitKind::kF32Direct;
    }
    if (bf16) {
      return s.kv_len >= choice_.bf16_min_keys ? UnitKind::kBf16
                                               : UnitKind::kF32Direct;
    }
    return flash::PackF32(s) ? UnitKind::kF32Packed : UnitKind::kF32Direct;
  };

  // Scratch layout: units, packed K/V, per-thread tiles.
  const int64_t n = static_cast<int64_t>(seqs.size());
  int64_t num_units = 0;
  int64_t max_kv = 0;
  for (const FlashSequence& s : seqs) {
    num_units += num_heads_ * CeilDiv(s.q_len, BQ);
    max_kv = std::max(max_kv, s.kv_len);
  }
  const int64_t k_block = bf16 ? hdp * BK : hd * BK;
  const int64_t v_block = BK * hd;  // bf16 or fp32
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
  const bool vdp = isa_ == Isa::kAvx512Bf16;
  const int64_t q16_off = p16_off + round16(BQ * BK / 2);
  const int64_t qt_off = q16_off + (vdp ? round16((BQ * hdp + 1) / 2) : 0);
  // qt: fp32 [hd][BQ], or bf16 pairs on the AMX path. Both bf16 paths may
  // also run the fp32 unit (short sequences), so it is always there.
  const int64_t m_off = qt_off + round16(hd * BQ);
  const int64_t limit_off = m_off + 3 * BQ;
  const int64_t limit32_off = limit_off + 2 * BQ;
  const int64_t pv_off = limit32_off + BQ;
  const int64_t thread_stride =
      // pv rows: hd floats apart, PaddedHeadDim(hd) on the Highway unit.
      round16(std::max(pv_off + BQ * flash::PaddedHeadDim(hd), max_kv + 16));
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
    // Pack K and V once per call: [seq][kv head][block]. The fp32 unit reads
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
      const UnitKind k = kind(s);
      if (k == UnitKind::kF32Direct) continue;
      const int64_t nkb = CeilDiv(s.kv_len, BK);
      const int64_t local = b - block_offset[si];
      const int64_t g = local / nkb;
      const int64_t kb = local % nkb;
      if (k == UnitKind::kAmx) {
        flash::PackAmxBlock(s, g, kb, hd, k_packed_bf16 + b * k_block,
                            v_packed + b * v_block);
      } else if (k == UnitKind::kBf16) {
        flash::PackBf16Block(s, g, kb, hd, k_packed_bf16 + b * k_block,
                             v_packed + b * v_block);
      } else {
        flash::PackF32Block(s, g, kb, hd, k_packed_f32 + b * k_block,
                            v_packed_f32 + b * v_block);
      }
    }
  }

#pragma omp parallel
  {
    // The AMX tile configuration is loaded once per thread and call.
    if (amx) flash::AmxConfigure();
#pragma omp for schedule(dynamic, 1)
    for (int64_t ui = 0; ui < num_units; ++ui) {
      const Unit& unit = units[ui];
      const FlashSequence& s = seqs[unit.seq];
      const int64_t h = unit.head;
      const int64_t g = h / group;
      const int64_t i0 = unit.qblock * BQ;
      const int64_t nq = std::min(BQ, s.q_len - i0);
      float* mine = tiles + omp_get_thread_num() * thread_stride;
      if (!simd) {
        flash::ScalarUnit(s, h, g, i0, nq, hd, ctx_stride, mine, h == 0);
        continue;
      }
      flash::ThreadTiles t;
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
      const UnitKind k = kind(s);
      if (k == UnitKind::kAmx) {
        flash::AmxUnit(s, k_packed_bf16 + first_block * k_block,
                       v_packed + first_block * v_block, h, g, i0, nq, hd,
                       ctx_stride, t, h == 0);
      } else if (k == UnitKind::kBf16) {
        flash::Bf16Unit(s, k_packed_bf16 + first_block * k_block,
                        v_packed + first_block * v_block, h, g, i0, nq, hd,
                        ctx_stride, t, h == 0);
      } else if (k == UnitKind::kF32Packed) {
        const int64_t head_rows = CeilDiv(s.kv_len, BK) * BK;
        f32_unit(s, k_packed_f32 + first_block * k_block + g * head_rows * hd,
                 v_packed_f32 + first_block * v_block + g * head_rows * hd, hd,
                 h, i0, nq, hd, ctx_stride, t, h == 0);
      } else {
        f32_unit(s, s.k + g * hd, s.v + g * hd, s.kv_stride, h, i0, nq, hd,
                 ctx_stride, t, h == 0);
      }
    }
    if (amx) flash::AmxRelease();
  }
  return absl::OkStatus();
}

}  // namespace attn::kernels::internal
