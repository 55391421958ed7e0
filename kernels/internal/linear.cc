#include "kernels/internal/linear.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/status_macros.h"
#include "kernels/internal/dnnl_util.h"

namespace attn::kernels::internal {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using DT = memory::data_type;

// Token count used to let oneDNN pick the packed weight layout at Create.
constexpr int64_t kLayoutProbeTokens = 256;

// Rounds to the nearest bf16 value (ties to even), kept in fp32.
inline float RoundToBf16(float v) {
  return BFloat16ToFloat(FloatToBFloat16(v));
}

}  // namespace

bool Linear::CpuHasBf16Gemm() {
  // oneDNN 2.6 has jit bf16 matmuls from avx512_core on (natively with
  // avx512_core_bf16 / AMX, by emulation on plain AVX-512); below that only
  // the reference implementation, hundreds of times slower.
  return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core;
}

absl::StatusOr<std::unique_ptr<Linear>> Linear::Create(
    const dnnl::engine& engine, std::string name, int64_t in_features,
    int64_t out_features, const std::vector<float>& weight,
    const std::vector<float>& bias, float multiplier, ComputeDType dtype) {
  const bool emulate = dtype == ComputeDType::kBFloat16 && !CpuHasBf16Gemm();
  std::unique_ptr<Linear> linear(new Linear(
      engine, std::move(name), in_features, out_features, dtype, emulate));
  Linear& l = *linear;
  absl::Status status = CallDnnl(
      absl::StrCat("packing the ", l.name_, " weights"), [&]() -> absl::Status {
        const DT gemm_type = l.GemmType();
        // Let oneDNN choose the weight layout for a representative shape.
        const memory::desc probe_src({kLayoutProbeTokens, in_features},
                                     gemm_type, Tag::ab);
        const memory::desc any_wei({in_features, out_features}, gemm_type,
                                   Tag::any);
        const memory::desc dst({kLayoutProbeTokens, out_features}, DT::f32,
                               Tag::ab);
        dnnl::matmul::primitive_desc pd(
            dnnl::matmul::desc(probe_src, any_wei, dst), UserScratchpadAttr(),
            engine);
        l.weights_md_ = pd.weights_desc();

        // PyTorch [out, in] row-major is matmul weights [in, out] with tag ba.
        std::vector<float> scaled(weight);
        if (multiplier != 1.0f) {
          for (float& w : scaled) w *= multiplier;
        }
        // Emulated bf16: the weights take their bf16 values, as the native
        // path's f32 -> bf16 reorder would give them.
        if (emulate) {
          for (float& w : scaled) w = RoundToBf16(w);
        }
        const memory::desc user_md({in_features, out_features}, DT::f32,
                                   Tag::ba);
        memory user_mem(user_md, engine, scaled.data());
        l.weights_ = memory(l.weights_md_, engine);
        dnnl::stream stream(engine);
        dnnl::reorder(user_mem, l.weights_)
            .execute(stream, user_mem, l.weights_);

        if (!bias.empty()) {
          l.has_bias_ = true;
          l.bias_md_ = memory::desc({1, out_features}, DT::f32, Tag::ab);
          l.bias_ = memory(l.bias_md_, engine);
          float* dst_bias = static_cast<float*>(l.bias_.get_data_handle());
          for (int64_t i = 0; i < out_features; ++i) {
            dst_bias[i] = bias[i] * multiplier;
          }
        }
        stream.wait();
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return linear;
}

absl::StatusOr<Linear::Prims> Linear::CreatePrims(int64_t tokens) const {
  Prims p;
  ATTN_RETURN_IF_ERROR(CallDnnl(
      absl::StrCat("creating the ", name_, " matmul for ", tokens, " tokens"),
      [&]() -> absl::Status {
        const DT gemm_type = GemmType();
        p.src_md = memory::desc({tokens, in_}, gemm_type, Tag::ab);
        p.dst_md = memory::desc({tokens, out_}, DT::f32, Tag::ab);
        const dnnl::primitive_attr attr = UserScratchpadAttr();
        dnnl::matmul::primitive_desc pd =
            has_bias_ ? dnnl::matmul::primitive_desc(
                            dnnl::matmul::desc(p.src_md, weights_md_, bias_md_,
                                               p.dst_md),
                            attr, engine_)
                      : dnnl::matmul::primitive_desc(
                            dnnl::matmul::desc(p.src_md, weights_md_, p.dst_md),
                            attr, engine_);
        p.matmul = dnnl::matmul(pd);
        p.impl = pd.impl_info_str();
        p.scratchpad_md = pd.scratchpad_desc();
        if (gemm_type == DT::bf16) {
          p.src_f32_md = memory::desc({tokens, in_}, DT::f32, Tag::ab);
          dnnl::reorder::primitive_desc rpd(engine_, p.src_f32_md, engine_,
                                            p.src_md, attr);
          p.to_bf16_scratchpad_md = rpd.scratchpad_desc();
          p.to_bf16 = dnnl::reorder(rpd);
        }
        return absl::OkStatus();
      }));
  return p;
}

absl::StatusOr<std::shared_ptr<const Linear::Prims>> Linear::GetPrims(
    int64_t tokens) const {
  return cache_.GetOrCreate(std::make_pair(tokens, CallerThreads()),
                            [&] { return CreatePrims(tokens); });
}

absl::StatusOr<std::string> Linear::ImplementationName(int64_t tokens) const {
  absl::StatusOr<std::shared_ptr<const Prims>> prims = GetPrims(tokens);
  if (!prims.ok()) return prims.status();
  return (*prims)->impl;
}

absl::Status Linear::Forward(const float* x, int64_t tokens, float* y) const {
  absl::StatusOr<std::shared_ptr<const Prims>> prims_or = GetPrims(tokens);
  if (!prims_or.ok()) return prims_or.status();
  const Prims& p = **prims_or;
  return CallDnnl(
      absl::StrCat("running the ", name_, " matmul"), [&]() -> absl::Status {
        // Scratch from the pool: no allocation once shapes repeat.
        ScratchLayout layout;
        const size_t scratch_at =
            layout.Add<uint8_t>(p.scratchpad_md.get_size());
        const bool bf16 = GemmType() == DT::bf16;
        const size_t x16_at = layout.Add<uint16_t>(bf16 ? tokens * in_ : 0);
        const size_t xr_at =
            layout.Add<float>(emulate_bf16_ ? tokens * in_ : 0);
        const size_t rscratch_at =
            layout.Add<uint8_t>(bf16 ? p.to_bf16_scratchpad_md.get_size() : 0);
        ScratchPool::Lease arena = pool_.Acquire();
        void* base = arena->Reserve(layout.bytes());

        dnnl::stream stream(engine_);
        memory scratch_mem(p.scratchpad_md, engine_,
                           ScratchLayout::At<uint8_t>(base, scratch_at));
        memory src;
        if (bf16) {
          memory f32_mem = Borrow(p.src_f32_md, engine_, x);
          src = memory(p.src_md, engine_,
                       ScratchLayout::At<uint16_t>(base, x16_at));
          memory rscratch_mem(p.to_bf16_scratchpad_md, engine_,
                              ScratchLayout::At<uint8_t>(base, rscratch_at));
          p.to_bf16.execute(stream, {{DNNL_ARG_FROM, f32_mem},
                                     {DNNL_ARG_TO, src},
                                     {DNNL_ARG_SCRATCHPAD, rscratch_mem}});
        } else if (emulate_bf16_) {
          // Emulated bf16: the input takes its bf16 values; products of bf16
          // values are exact in fp32 and accumulate in fp32, as natively.
          float* xr = ScratchLayout::At<float>(base, xr_at);
          const int64_t n = tokens * in_;
          for (int64_t i = 0; i < n; ++i) xr[i] = RoundToBf16(x[i]);
          src = Borrow(p.src_md, engine_, xr);
        } else {
          src = Borrow(p.src_md, engine_, x);
        }
        memory dst(p.dst_md, engine_, y);
        std::unordered_map<int, memory> args = {
            {DNNL_ARG_SRC, src},
            {DNNL_ARG_WEIGHTS, weights_},
            {DNNL_ARG_DST, dst},
            {DNNL_ARG_SCRATCHPAD, scratch_mem}};
        if (has_bias_) args.emplace(DNNL_ARG_BIAS, bias_);
        p.matmul.execute(stream, args);
        stream.wait();
        return absl::OkStatus();
      });
}

}  // namespace attn::kernels::internal
