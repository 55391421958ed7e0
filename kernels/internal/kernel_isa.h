// The choice of the flash core's kernels for one layer: the default for
// this CPU, or the ATTN_KERNEL_ISA override (kernels/kernel_isa.h lists the
// values). Internal: not part of the public API. Thread-safe.
#ifndef ATTNSERVE_KERNELS_INTERNAL_KERNEL_ISA_H_
#define ATTNSERVE_KERNELS_INTERNAL_KERNEL_ISA_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/attention.h"

namespace attn::kernels::internal {
namespace flash {
struct HwyTarget;  // flash_hwy.h
}  // namespace flash

enum class CoreIsa { kScalar, kHwy, kAvx512, kAvx512Bf16, kAmxBf16 };

struct CoreChoice {
  CoreIsa isa = CoreIsa::kScalar;
  const flash::HwyTarget* hwy = nullptr;  // set iff isa == kHwy
  std::string name;                       // "hwy_avx2", "amx_bf16", ...
  // kAvx512Bf16 only: sequences of at least this many keys run the
  // vdpbf16ps unit, shorter ones the AVX-512 fp32 unit (0: every sequence
  // runs vdpbf16ps, as ATTN_KERNEL_ISA=avx512_bf16 forces).
  int64_t bf16_min_keys = 0;
  // The default for a bf16 layer on an AVX512-BF16 CPU (when AMX does not
  // serve it): the flash core measures where vdpbf16ps beats the fp32 unit
  // on the layer's own head shape (bf16_calibration.h) and sets
  // bf16_min_keys, or falls back to avx512 where it never wins.
  bool calibrate = false;
};

// The core of a layer of `dtype` with heads of `head_dim`: ATTN_KERNEL_ISA
// when set (INVALID_ARGUMENT for unknown values, FAILED_PRECONDITION for
// ones this CPU cannot run), otherwise this CPU's default.
absl::StatusOr<CoreChoice> ChooseCore(ComputeDType dtype, int64_t head_dim);

// This CPU's default core (ATTN_KERNEL_ISA ignored; `calibrate` may be set).
CoreChoice DefaultCore(ComputeDType dtype, int64_t head_dim);

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_KERNEL_ISA_H_
