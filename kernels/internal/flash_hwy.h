// The portable fp32 unit of the flash core, written once with Google
// Highway (flash_hwy.cc) and compiled for every vector ISA Highway targets
// here: AVX2+FMA, AVX-512 (Highway's "AVX3") and SSE4 on x86-64, NEON on
// aarch64, plus Highway's EMU128 fallback. The unit runs on the target the
// caller picks (kernel_isa.cc: the best one this CPU runs, or
// ATTN_KERNEL_ISA=hwy_<target>).
//
// The unit has F32Unit's contract (flash_tiles.h) and algorithm: the query
// block is transposed once, score tiles come out key-major, and the online
// softmax runs down the columns, one lane per query row. Register tiles are
// 6 keys x 2 vectors on 16-register ISAs (AVX2, SSE4) and 6 x 4 on
// 32-register ones (AVX-512, NEON). The output accumulator rows in
// ThreadTiles::pv are PaddedHeadDim(hd) floats apart.
//
// SVE/SVE2 are not compiled: their vector types are sizeless and cannot
// form the arrays of accumulators the register tiles use; aarch64 CPUs with
// SVE run the NEON target.
// Internal: not part of the public API. Thread-safety: the table is
// immutable after static initialisation; units are reentrant.
#ifndef ATTNSERVE_KERNELS_INTERNAL_FLASH_HWY_H_
#define ATTNSERVE_KERNELS_INTERNAL_FLASH_HWY_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/internal/flash_tiles.h"

namespace attn::kernels::internal::flash {

// F32Unit's signature (flash_tiles.h).
using F32UnitFn = void (*)(const FlashSequence& s, const float* k,
                           const float* v, int64_t kv_stride, int64_t h,
                           int64_t i0, int64_t nq, int64_t hd,
                           int64_t ctx_stride, const ThreadTiles& t,
                           bool write_mask);

// One compiled Highway target.
struct HwyTarget {
  int64_t target;    // Highway's bit (HWY_AVX2, HWY_NEON, ...)
  const char* name;  // "hwy_avx2", "hwy_avx3", "hwy_sse4", "hwy_neon", ...
  F32UnitFn unit;
};

// Every target compiled into this binary, best first (whether or not this
// CPU runs it: check hwy::SupportedTargets()).
absl::Span<const HwyTarget> HwyTargets();

// Floats between consecutive output rows in ThreadTiles::pv for the
// Highway unit: hd rounded up to a multiple of 16.
inline int64_t PaddedHeadDim(int64_t hd) { return (hd + 15) / 16 * 16; }

}  // namespace attn::kernels::internal::flash

#endif  // ATTNSERVE_KERNELS_INTERNAL_FLASH_HWY_H_
