// The Highway targets compiled into the kernels (flash_hwy.cc,
// paged_decode_hwy.cc): include before hwy/foreach_target.h.
// Left out: SSSE3 (superseded by SSE4 on every x86-64 server) and SVE/SVE2
// (sizeless vector types: no arrays of accumulators; aarch64 CPUs with SVE
// run the NEON target). Internal: not part of the public API.
#ifndef ATTNSERVE_KERNELS_INTERNAL_HWY_TARGETS_H_
#define ATTNSERVE_KERNELS_INTERNAL_HWY_TARGETS_H_

#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS \
  (HWY_SSSE3 | HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128)
#endif

#endif  // ATTNSERVE_KERNELS_INTERNAL_HWY_TARGETS_H_
