#include "kernels/internal/kernel_isa.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "hwy/targets.h"
#include "kernels/internal/flash_hwy.h"
#include "kernels/internal/flash_tiles.h"
#include "kernels/kernel_isa.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels::internal {
namespace {

// Every value ATTN_KERNEL_ISA knows, on any CPU.
constexpr const char* kKnown[] = {
    "scalar",     "hwy",    "hwy_avx3",    "hwy_avx2", "hwy_sse4", "hwy_neon",
    "hwy_emu128", "avx512", "avx512_bf16", "amx_bf16", "amx"};

// What this CPU runs. On x86 oneDNN's effective ISA (which honours
// ONEDNN_MAX_CPU_ISA) caps every path, so that ONEDNN_MAX_CPU_ISA=AVX2 on
// an AVX-512 machine behaves like an AVX2-only CPU.
struct Cpu {
  bool avx512 = false;
  bool avx512_bf16 = false;
  bool amx = false;  // AMX-BF16, tile state granted by the OS
  std::vector<const flash::HwyTarget*> hwy;  // best first
};

Cpu Detect(bool probe_amx) {
  Cpu cpu;
  const int64_t supported = hwy::SupportedTargets();
#if defined(__x86_64__)
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  cpu.avx512 = isa >= dnnl::cpu_isa::avx512_core;
  cpu.avx512_bf16 = isa >= dnnl::cpu_isa::avx512_core_bf16;
  cpu.amx = probe_amx && isa >= dnnl::cpu_isa::avx512_core_amx &&
            flash::RequestAmxPermission();
  auto capped = [&](int64_t target) {
    if (target == HWY_AVX3) return !cpu.avx512;
    if (target == HWY_AVX2) return isa < dnnl::cpu_isa::avx2;
    if (target == HWY_SSE4) return isa < dnnl::cpu_isa::sse41;
    return false;
  };
#else
  (void)probe_amx;
  auto capped = [](int64_t) { return false; };
#endif
  for (const flash::HwyTarget& t : flash::HwyTargets()) {
    if ((supported & t.target) != 0 && !capped(t.target)) cpu.hwy.push_back(&t);
  }
  return cpu;
}

std::vector<std::string> Names(const Cpu& cpu) {
  std::vector<std::string> names = {"scalar"};
  for (const flash::HwyTarget* t : cpu.hwy) names.push_back(t->name);
  if (cpu.avx512) names.push_back("avx512");
  if (cpu.avx512_bf16) names.push_back("avx512_bf16");
  if (cpu.amx) names.push_back("amx_bf16");
  return names;
}

CoreChoice Make(CoreIsa isa, const char* name) {
  CoreChoice c;
  c.isa = isa;
  c.name = name;
  return c;
}

CoreChoice Hwy(const flash::HwyTarget* t) {
  CoreChoice c = Make(CoreIsa::kHwy, t->name);
  c.hwy = t;
  return c;
}

CoreChoice Default(const Cpu& cpu, ComputeDType dtype, int64_t head_dim) {
  const bool bf16 = dtype == ComputeDType::kBFloat16;
  if (bf16 && cpu.amx && head_dim % 32 == 0) {
    return Make(CoreIsa::kAmxBf16, "amx_bf16");
  }
  // Whether the vdpbf16ps core beats the fp32 FMA core depends on the CPU
  // and the sequence length: slower at every length on a Sapphire Rapids
  // class CPU with AMX forced off (one vdpbf16ps port, packing on top),
  // faster from 64 keys and slower at 16 on an AMD Zen 5 class one
  // (docs/KERNELS.md). So it is measured, per layer shape, when the flash
  // core is built (bf16_calibration.h).
  if (bf16 && cpu.avx512_bf16) {
    CoreChoice c = Make(CoreIsa::kAvx512Bf16, "avx512_bf16");
    c.calibrate = true;
    return c;
  }
  if (cpu.avx512) return Make(CoreIsa::kAvx512, "avx512");
  // Highway's EMU128 is scalar code in vector clothes: not a default.
  if (!cpu.hwy.empty() && cpu.hwy.front()->target != HWY_EMU128) {
    return Hwy(cpu.hwy.front());
  }
  return Make(CoreIsa::kScalar, "scalar");
}

}  // namespace

CoreChoice DefaultCore(ComputeDType dtype, int64_t head_dim) {
  return Default(Detect(dtype == ComputeDType::kBFloat16), dtype, head_dim);
}

absl::StatusOr<CoreChoice> ChooseCore(ComputeDType dtype, int64_t head_dim) {
  const char* env = std::getenv("ATTN_KERNEL_ISA");
  const std::string forced = env != nullptr ? env : "";
  const bool bf16 = dtype == ComputeDType::kBFloat16;
  const Cpu cpu =
      Detect(/*probe_amx=*/bf16 || forced == "amx_bf16" || forced == "amx");
  if (forced.empty()) return Default(cpu, dtype, head_dim);
  bool known = false;
  for (const char* k : kKnown) known = known || forced == k;
  const std::string here = absl::StrJoin(Names(cpu), ", ");
  if (!known) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ATTN_KERNEL_ISA=", forced, " is not a kernel ISA; valid values: ",
        absl::StrJoin(kKnown, ", "), " (this CPU runs: hwy, ", here, ")"));
  }
  auto unsupported = [&] {
    return absl::FailedPreconditionError(absl::StrCat(
        "ATTN_KERNEL_ISA=", forced,
        ": this CPU (or ONEDNN_MAX_CPU_ISA) cannot run it; this CPU runs: "
        "hwy, ",
        here));
  };
  if (forced == "scalar") return Make(CoreIsa::kScalar, "scalar");
  if (forced == "hwy") {
    if (cpu.hwy.empty()) return unsupported();
    return Hwy(cpu.hwy.front());
  }
  for (const flash::HwyTarget* t : cpu.hwy) {
    if (forced == t->name) return Hwy(t);
  }
  if (forced.rfind("hwy_", 0) == 0) return unsupported();
  // avx512, avx512_bf16, amx_bf16 / amx: layers the bf16 cores cannot serve
  // (fp32 layers; head_dim % 32 != 0 for AMX) get the AVX-512 fp32 core.
  if (!cpu.avx512) return unsupported();
  if (forced == "avx512_bf16") {
    if (!cpu.avx512_bf16) return unsupported();
    if (bf16) return Make(CoreIsa::kAvx512Bf16, "avx512_bf16");
  } else if (forced == "amx_bf16" || forced == "amx") {
    if (!cpu.amx) return unsupported();
    if (bf16 && head_dim % 32 == 0) return Make(CoreIsa::kAmxBf16, "amx_bf16");
  }
  return Make(CoreIsa::kAvx512, "avx512");
}

}  // namespace attn::kernels::internal

namespace attn::kernels {

std::vector<std::string> SupportedKernelIsas() {
  return internal::Names(internal::Detect(/*probe_amx=*/true));
}

std::vector<std::string> KnownKernelIsas() {
  std::vector<std::string> names;
  for (const char* k : internal::kKnown) {
    const std::string name = k;
    if (name != "hwy" && name != "amx") names.push_back(name);
  }
  return names;
}

}  // namespace attn::kernels
