// The AMX bf16 flash core (the default core of bf16 layers on CPUs with AMX
// when head_dim % 32 == 0): selection, and accuracy against the fp64
// reference (bf16 tolerance 3e-2 * (1 + |ref|)) and against the fp32 layer
// (<= 2e-2 absolute on unit-scale inputs) on shapes that exercise partial
// 16-row and 32-key tiles, causal tile skipping, GQA, key lengths and masks,
// and on both sides of the 17-key boundary below which bf16 layers use the
// fp32 unit.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/internal/flash_core.h"
#include "kernels/kernel_isa.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

using internal::FlashCore;

constexpr double kBf16Tolerance = 3e-2;
constexpr double kBf16VsFp32Tolerance = 2e-2;

bool CpuHasAmx() {
  return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core_amx;
}

TEST(AmxCoreTest, SelectedOnlyForBf16WithHeadDimMultipleOf32) {
  const FlashCore bf16_64(8, 8, 64, ComputeDType::kBFloat16);
  const FlashCore bf16_48(8, 8, 48, ComputeDType::kBFloat16);
  const FlashCore fp32_64(8, 8, 64, ComputeDType::kFloat32);
  // Below AVX-512 (e.g. AVX2-only EPYC, aarch64) the best Highway target
  // runs: SupportedKernelIsas() lists it right after "scalar".
  const bool avx512 =
      dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core;
  const std::vector<std::string> isas = SupportedKernelIsas();
  ASSERT_GE(isas.size(), 2u);
  const bool vdp =
      dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core_bf16;
  if (CpuHasAmx()) {
    EXPECT_EQ(std::string(bf16_64.isa()), "amx_bf16");
  } else if (vdp) {
    // AVX512-BF16 without AMX: vdpbf16ps or avx512, as measured.
    EXPECT_NE(bf16_64.description().find("calibrated"), std::string::npos)
        << bf16_64.description();
  } else {
    EXPECT_EQ(std::string(bf16_64.isa()), avx512 ? "avx512" : isas[1]);
  }
  EXPECT_EQ(std::string(fp32_64.isa()), avx512 ? "avx512" : isas[1]);
  EXPECT_NE(std::string(bf16_48.isa()), "amx_bf16");
  EXPECT_NE(std::string(fp32_64.isa()), "amx_bf16");
}

struct NamedCase {
  std::string name;
  Case c;
};

std::vector<NamedCase> AmxCases() {
  std::vector<NamedCase> cases;
  auto config = [](int64_t d, int64_t h, int64_t kvh, int64_t hd) {
    AttentionConfig c;
    c.d_model = d;
    c.num_heads = h;
    c.num_kv_heads = kvh;
    c.head_dim = hd;
    c.compute_dtype = ComputeDType::kBFloat16;
    return c;
  };
  Case c;
  c.return_weights = false;
  c.config = config(128, 4, 0, 32);
  c.q_len = c.kv_len = 77;  // partial 16-row tiles and 32-key chunks
  c.causal = true;
  cases.push_back({"CausalSelf77Hd32", c});
  c.config = config(192, 2, 0, 96);
  c.q_len = c.kv_len = 150;
  c.batch = 2;
  cases.push_back({"CausalSelf150Hd96", c});
  c = Case();
  c.return_weights = false;
  c.config = config(128, 4, 2, 64);  // GQA
  c.self_attention = false;
  c.batch = 3;
  c.q_len = 45;
  c.kv_len = 130;
  c.key_lengths = KeyLengths::kWithZero;  // one item sees no key
  cases.push_back({"GqaCrossKeyLengths", c});
  for (MaskKind kind : {MaskKind::kAdditive, MaskKind::kBoolean}) {
    c = Case();
    c.return_weights = false;
    c.config = config(128, 2, 0, 64);
    c.batch = 2;
    c.q_len = c.kv_len = 70;
    c.causal = true;
    c.mask_kind = kind;
    c.mask_per_batch = true;
    c.mask_fully_masked_row = true;
    cases.push_back({kind == MaskKind::kAdditive ? "AdditiveMaskCausal"
                                                 : "BooleanMaskCausal",
                     c});
  }
  // Sequences with fewer than 17 keys run on the fp32 unit inside a bf16
  // layer; 17 keys is the first length on the AMX unit.
  for (int64_t len : {16, 17}) {
    c = Case();
    c.return_weights = false;
    c.config = config(128, 2, 0, 64);
    c.batch = 3;
    c.q_len = c.kv_len = len;
    c.causal = true;
    c.key_lengths = KeyLengths::kRandom;
    cases.push_back({"SelfCausalKeys" + std::to_string(len), c});
  }
  return cases;
}

class AmxCaseTest : public ::testing::TestWithParam<NamedCase> {};

TEST_P(AmxCaseTest, MatchesReferenceAndFp32) {
  const Case& c = GetParam().c;
  const CaseData data = MakeCaseData(c);
  auto bf16 = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  const Comparison r = RunAndCompare(c, data, bf16->get());
  ASSERT_EQ(r.error, "") << c.DebugString();
  EXPECT_FALSE(r.has_non_finite) << c.DebugString();
  EXPECT_LE(r.max_output_scaled_error, kBf16Tolerance) << c.DebugString();

  AttentionConfig fp32_config = c.config;
  fp32_config.compute_dtype = ComputeDType::kFloat32;
  auto fp32 = MultiHeadAttention::Create(fp32_config, data.weights);
  ASSERT_TRUE(fp32.ok()) << fp32.status();
  const size_t n = c.batch * c.q_len * c.config.d_model;
  std::vector<float> a(n), b(n);
  ASSERT_TRUE((*fp32)->Forward(data.input, {a.data()}).ok());
  ASSERT_TRUE((*bf16)->Forward(data.input, {b.data()}).ok());
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(a[i] - b[i])));
  }
  EXPECT_LE(worst, kBf16VsFp32Tolerance) << c.DebugString();
}

INSTANTIATE_TEST_SUITE_P(Amx, AmxCaseTest, ::testing::ValuesIn(AmxCases()),
                         [](const ::testing::TestParamInfo<NamedCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace attn::kernels::testing
