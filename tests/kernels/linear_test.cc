// The projection GEMMs use an optimised oneDNN implementation (not `ref:`)
// for the token counts the server produces, and compute y = x·Wᵀ + b.
#include "kernels/internal/linear.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels::internal {
namespace {

TEST(LinearTest, NoReferenceFallbackAndCorrect) {
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  std::mt19937 rng(5);
  const int64_t in = 48, out = 40;
  const std::vector<float> w = testing::RandomVector(rng, out * in, 0.2);
  const std::vector<float> b = testing::RandomVector(rng, out, 0.1);
  for (ComputeDType dtype : {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
    auto linear = Linear::Create(engine, "test", in, out, w, b, 0.5f, dtype);
    ASSERT_TRUE(linear.ok()) << linear.status();
    const double tolerance = dtype == ComputeDType::kFloat32 ? 1e-5 : 3e-2;
    for (int64_t tokens : {1, 7, 64, 300}) {
      auto impl = (*linear)->ImplementationName(tokens);
      ASSERT_TRUE(impl.ok()) << impl.status();
      EXPECT_NE(impl->rfind("ref", 0), 0u) << *impl << " tokens " << tokens;
      const std::vector<float> x = testing::RandomVector(rng, tokens * in, 1);
      std::vector<float> y(tokens * out);
      ASSERT_TRUE((*linear)->Forward(x.data(), tokens, y.data()).ok());
      double max_err = 0;
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t o = 0; o < out; ++o) {
          double acc = b[o];
          for (int64_t c = 0; c < in; ++c) {
            acc += double(x[t * in + c]) * w[o * in + c];
          }
          max_err = std::max(max_err, std::abs(0.5 * acc - y[t * out + o]));
        }
      }
      EXPECT_LE(max_err, tolerance) << "tokens " << tokens;
    }
  }
}

// bf16 layers give bf16 products on every CPU: natively where oneDNN has a
// bf16 GEMM, emulated on fp32 GEMMs (bf16-rounded input and weights)
// elsewhere. Both equal an fp64 GEMM of the bf16-rounded operands to fp32
// accumulation error, far tighter than the 3e-2 against unrounded operands.
TEST(LinearTest, Bf16GivesBf16ProductsOnEveryCpu) {
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  std::mt19937 rng(9);
  const int64_t in = 64, out = 24, tokens = 33;
  const std::vector<float> w = testing::RandomVector(rng, out * in, 0.2);
  const std::vector<float> x = testing::RandomVector(rng, tokens * in, 1);
  auto linear = Linear::Create(engine, "test", in, out, w, {}, 1.0f,
                               ComputeDType::kBFloat16);
  ASSERT_TRUE(linear.ok()) << linear.status();
  EXPECT_EQ((*linear)->emulated_bf16(), !Linear::CpuHasBf16Gemm());
  auto impl = (*linear)->ImplementationName(tokens);
  ASSERT_TRUE(impl.ok()) << impl.status();
  EXPECT_NE(impl->rfind("ref", 0), 0u) << *impl;
  std::vector<float> y(tokens * out);
  ASSERT_TRUE((*linear)->Forward(x.data(), tokens, y.data()).ok());
  auto bf16 = [](float v) { return BFloat16ToFloat(FloatToBFloat16(v)); };
  double max_err = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < in; ++c) {
        acc += double(bf16(x[t * in + c])) * bf16(w[o * in + c]);
      }
      max_err = std::max(max_err, std::abs(acc - y[t * out + o]));
    }
  }
  EXPECT_LE(max_err, 1e-4);
}

}  // namespace
}  // namespace attn::kernels::internal
