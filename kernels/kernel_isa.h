// Which attention core paths this CPU runs, and the ATTN_KERNEL_ISA
// override that forces one (tests, benchmarks, diagnosis).
//
// ATTN_KERNEL_ISA is read when a layer is created (MultiHeadAttention::
// Create). Values:
//   scalar       portable scalar code (any CPU)
//   hwy          the best Highway target this CPU runs (see below)
//   hwy_avx3     Highway fp32 core, AVX-512     hwy_avx2  AVX2+FMA
//   hwy_sse4     SSE4                          hwy_neon  NEON (aarch64)
//   hwy_emu128   Highway's portable fallback (x86 builds)
//   avx512       the hand-tuned AVX-512 fp32 core
//   avx512_bf16  bf16 layers: the vdpbf16ps core on every sequence (fp32
//                layers: avx512)
//   amx_bf16     bf16 layers with head_dim % 32 == 0: the AMX tile core
//                (other layers: avx512)
// Unknown values make Create fail with INVALID_ARGUMENT; values this CPU
// cannot run (or that oneDNN's ONEDNN_MAX_CPU_ISA caps away) with
// FAILED_PRECONDITION. Unset: AMX for bf16 layers where it runs; bf16
// layers on other AVX512-BF16 CPUs run vdpbf16ps from a key length measured
// when the layer is built and avx512 below it (or avx512 on all, where
// vdpbf16ps never wins); else avx512 on AVX-512 CPUs, else the best
// Highway vector target, else scalar.
//
// Thread-safety: the functions are thread-safe (no mutable state).
#ifndef ATTNSERVE_KERNELS_KERNEL_ISA_H_
#define ATTNSERVE_KERNELS_KERNEL_ISA_H_

#include <string>
#include <vector>

namespace attn::kernels {

// The ATTN_KERNEL_ISA values this CPU runs, without the "hwy" alias, in the
// order above (e.g. {"scalar", "hwy_avx2", "hwy_sse4", "hwy_emu128"} on an
// AVX2-only x86 CPU).
std::vector<std::string> SupportedKernelIsas();

// Every ATTN_KERNEL_ISA path on any CPU, without the "hwy" and "amx"
// aliases, in the order above (those SupportedKernelIsas() lacks are the
// ones this CPU, this build or ONEDNN_MAX_CPU_ISA cannot run).
std::vector<std::string> KnownKernelIsas();

}  // namespace attn::kernels

#endif  // ATTNSERVE_KERNELS_KERNEL_ISA_H_
