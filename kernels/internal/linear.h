// Linear layer y = x·Wᵀ + b on oneDNN matmul, with the weights packed once
// (in the layout oneDNN prefers) and one primitive per (token count, caller's
// OpenMP thread count) cached.
// Internal: not part of the public API.
//
// Thread-safety: Forward() is const and may be called concurrently; the
// primitive cache and the scratch pool are internally synchronized.
#ifndef ATTNSERVE_KERNELS_INTERNAL_LINEAR_H_
#define ATTNSERVE_KERNELS_INTERNAL_LINEAR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention.h"
#include "kernels/internal/primitive_cache.h"
#include "kernels/internal/scratch_arena.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels::internal {

class Linear {
 public:
  // `weight` is [out_features, in_features] row-major (PyTorch layout),
  // `bias` is [out_features] or empty. Both are multiplied by `multiplier`
  // before packing (used to fold the attention scale into Wq). With
  // kBFloat16 the GEMM reads bf16 input and weights and writes fp32; on a
  // CPU without a fast oneDNN bf16 GEMM (below AVX-512, see
  // CpuHasBf16Gemm) that is emulated: input and weights are rounded to
  // their bf16 values and multiplied on fp32 GEMMs, which gives the same
  // products (exact in fp32) at fp32 speed and memory.
  // `name` is used in error messages. REQUIRES: sizes already validated.
  static absl::StatusOr<std::unique_ptr<Linear>> Create(
      const dnnl::engine& engine, std::string name, int64_t in_features,
      int64_t out_features, const std::vector<float>& weight,
      const std::vector<float>& bias, float multiplier, ComputeDType dtype);

  // y[m, :] = x[m, :]·Wᵀ + b for m < tokens. `x` is [tokens, in_features],
  // `y` is [tokens, out_features], both row-major and dense.
  // REQUIRES: tokens > 0.
  absl::Status Forward(const float* x, int64_t tokens, float* y) const;

  // oneDNN's implementation name for `tokens` rows (e.g. "brg:avx512_core"),
  // for tests and benchmarks that guard against reference fallbacks.
  absl::StatusOr<std::string> ImplementationName(int64_t tokens) const;

  // True when this CPU runs bf16 matmuls on a jit oneDNN kernel; false when
  // kBFloat16 layers are emulated on fp32 GEMMs.
  static bool CpuHasBf16Gemm();

  // True when this layer emulates bf16 on fp32 GEMMs.
  bool emulated_bf16() const { return emulate_bf16_; }

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  // Primitives for one token count.
  struct Prims {
    dnnl::matmul matmul;
    dnnl::memory::desc src_md;
    dnnl::memory::desc dst_md;
    dnnl::memory::desc scratchpad_md;
    std::string impl;
    // bf16 only: f32 -> bf16 conversion of the input.
    dnnl::reorder to_bf16;
    dnnl::memory::desc src_f32_md;
    dnnl::memory::desc to_bf16_scratchpad_md;
  };

  Linear(const dnnl::engine& engine, std::string name, int64_t in, int64_t out,
         ComputeDType dtype, bool emulate_bf16)
      : engine_(engine),
        name_(std::move(name)),
        in_(in),
        out_(out),
        dtype_(dtype),
        emulate_bf16_(emulate_bf16) {}

  // The GEMM's input and weight type.
  dnnl::memory::data_type GemmType() const {
    return dtype_ == ComputeDType::kBFloat16 && !emulate_bf16_
               ? dnnl::memory::data_type::bf16
               : dnnl::memory::data_type::f32;
  }

  absl::StatusOr<std::shared_ptr<const Prims>> GetPrims(int64_t tokens) const;
  absl::StatusOr<Prims> CreatePrims(int64_t tokens) const;

  dnnl::engine engine_;
  const std::string name_;
  const int64_t in_;
  const int64_t out_;
  const ComputeDType dtype_;
  const bool emulate_bf16_;  // kBFloat16 on fp32 GEMMs (no bf16 GEMM here)
  dnnl::memory::desc weights_md_;  // packed layout
  dnnl::memory weights_;           // packed weights (owned by oneDNN)
  bool has_bias_ = false;
  dnnl::memory::desc bias_md_;
  dnnl::memory bias_;
  // Key: (tokens, CallerThreads()).
  mutable PrimitiveCache<std::pair<int64_t, int>, Prims> cache_;
  mutable ScratchPool pool_;  // oneDNN scratchpad and bf16 input
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_LINEAR_H_
