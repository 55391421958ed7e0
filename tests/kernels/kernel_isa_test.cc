// ATTN_KERNEL_ISA: unknown values fail Create with INVALID_ARGUMENT, values
// this CPU cannot run with FAILED_PRECONDITION (both list what runs here);
// every supported value runs and is named by ImplementationSummary(); the
// default core on CPUs without AVX-512 is the best Highway vector target.
#include "kernels/kernel_isa.h"

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

using ::testing::HasSubstr;

AttentionConfig Layer(ComputeDType dtype = ComputeDType::kFloat32) {
  AttentionConfig c;
  c.d_model = 64;
  c.num_heads = 2;
  c.compute_dtype = dtype;
  return c;
}

// Create with ATTN_KERNEL_ISA=isa (unset again before returning).
absl::StatusOr<std::unique_ptr<MultiHeadAttention>> CreateWith(
    const char* isa, ComputeDType dtype = ComputeDType::kFloat32) {
  std::mt19937 rng(3);
  const AttentionConfig c = Layer(dtype);
  AttentionWeights w = RandomWeights(rng, c, true);
  if (setenv("ATTN_KERNEL_ISA", isa, 1) != 0) {
    return absl::InternalError("setenv failed");
  }
  auto mha = MultiHeadAttention::Create(c, std::move(w));
  unsetenv("ATTN_KERNEL_ISA");
  return mha;
}

bool Supported(const std::string& isa) {
  for (const std::string& s : SupportedKernelIsas()) {
    if (s == isa) return true;
  }
  return false;
}

TEST(KernelIsaTest, ListsScalarFirstAndAVectorPath) {
  const std::vector<std::string> isas = SupportedKernelIsas();
  ASSERT_GE(isas.size(), 2u);
  EXPECT_EQ(isas[0], "scalar");
  // Every x86-64 and aarch64 CPU has some Highway target.
  EXPECT_EQ(isas[1].rfind("hwy_", 0), 0u) << isas[1];
}

TEST(KernelIsaTest, UnknownValueIsInvalidArgument) {
  auto mha = CreateWith("avx1024");
  ASSERT_FALSE(mha.ok());
  EXPECT_EQ(mha.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(mha.status().message());
  EXPECT_THAT(msg, HasSubstr("ATTN_KERNEL_ISA=avx1024"));
  EXPECT_THAT(msg, HasSubstr("valid values: scalar, hwy"));
  EXPECT_THAT(msg, HasSubstr(SupportedKernelIsas()[1]));
}

TEST(KernelIsaTest, KnownListsEverySupportedPathInOrder) {
  const std::vector<std::string> known = KnownKernelIsas();
  EXPECT_THAT(known, ::testing::Contains("hwy_neon"));
  EXPECT_THAT(known, ::testing::Contains("amx_bf16"));
  EXPECT_THAT(known, ::testing::Not(::testing::Contains("hwy")));
  size_t at = 0;  // SupportedKernelIsas() is a subsequence of known
  for (const std::string& isa : SupportedKernelIsas()) {
    while (at < known.size() && known[at] != isa) ++at;
    ASSERT_LT(at, known.size()) << isa << " missing or out of order";
  }
}

TEST(KernelIsaTest, EveryUnsupportedValueIsFailedPrecondition) {
  // Every known path this CPU lacks (NEON on x86, AVX2 on aarch64, AVX-512
  // and AMX where absent, ...): there is always at least one.
  std::vector<std::string> missing;
  for (const std::string& isa : KnownKernelIsas()) {
    if (!Supported(isa)) missing.push_back(isa);
  }
  ASSERT_FALSE(missing.empty());
  for (const std::string& isa : missing) {
    for (ComputeDType dtype :
         {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
      auto mha = CreateWith(isa.c_str(), dtype);
      ASSERT_FALSE(mha.ok()) << isa;
      EXPECT_EQ(mha.status().code(), absl::StatusCode::kFailedPrecondition)
          << isa << ": " << mha.status();
      EXPECT_THAT(std::string(mha.status().message()),
                  HasSubstr("ATTN_KERNEL_ISA=" + isa + ": this CPU"));
    }
  }
}

TEST(KernelIsaTest, EverySupportedValueRunsAndIsNamed) {
  for (const std::string& isa : SupportedKernelIsas()) {
    for (ComputeDType dtype :
         {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
      auto mha = CreateWith(isa.c_str(), dtype);
      ASSERT_TRUE(mha.ok()) << isa << ": " << mha.status();
      const std::string summary = (*mha)->ImplementationSummary();
      // The bf16 cores serve bf16 layers; fp32 layers get the AVX-512 one.
      const bool bf16_core = isa == "avx512_bf16" || isa == "amx_bf16";
      const std::string expected =
          bf16_core && dtype == ComputeDType::kFloat32 ? "avx512" : isa;
      EXPECT_THAT(summary, HasSubstr("core " + expected + ",")) << isa;
    }
  }
  // "hwy" is the best Highway target.
  auto best = CreateWith("hwy");
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_THAT((*best)->ImplementationSummary(),
              HasSubstr("core " + SupportedKernelIsas()[1] + ","));
}

TEST(KernelIsaTest, DefaultWithoutAvx512IsTheBestHighwayTarget) {
  unsetenv("ATTN_KERNEL_ISA");
  std::mt19937 rng(3);
  auto mha =
      MultiHeadAttention::Create(Layer(), RandomWeights(rng, Layer(), true));
  ASSERT_TRUE(mha.ok()) << mha.status();
  const std::string summary = (*mha)->ImplementationSummary();
  if (Supported("avx512")) {
    EXPECT_THAT(summary, HasSubstr("core avx512,"));
  } else {
    EXPECT_THAT(summary, HasSubstr("core " + SupportedKernelIsas()[1] + ","));
  }
}

}  // namespace
}  // namespace attn::kernels::testing
