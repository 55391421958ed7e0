// Compares MultiHeadAttention with the naive reference over named feature
// cases and many seeded random shapes.
#include "kernels/attention.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/kernel_isa.h"
#include "tests/kernels/reference_attention.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

constexpr double kFp32Tolerance = 1e-4;
// bf16 projections: inputs and weights carry 8 significant bits (relative
// error 2^-9 each), so errors grow with the output: |err| <= 3e-2 * (1 +
// |ref|), i.e. atol = rtol = 3e-2 (PyTorch uses 5e-2 for bf16 SDPA).
constexpr double kBf16Tolerance = 3e-2;

AttentionConfig Config(int64_t d_model, int64_t heads, int64_t kv_heads = 0,
                       int64_t head_dim = 0, float scale = 0.0f) {
  AttentionConfig c;
  c.d_model = d_model;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.scale = scale;
  return c;
}

// Makes the observed errors visible in --gtest_output=xml reports.
void RecordErrors(const Comparison& r) {
  ::testing::Test::RecordProperty("max_output_error",
                                  absl::StrFormat("%.3g", r.max_output_error));
  ::testing::Test::RecordProperty(
      "max_output_scaled_error",
      absl::StrFormat("%.3g", r.max_output_scaled_error));
  ::testing::Test::RecordProperty("max_weights_error",
                                  absl::StrFormat("%.3g", r.max_weights_error));
}

struct NamedCase {
  std::string name;
  Case c;
};

void PrintTo(const NamedCase& n, std::ostream* os) {
  *os << n.name << ": " << n.c.DebugString();
}

std::vector<NamedCase> FeatureCases() {
  std::vector<NamedCase> cases;
  auto add = [&](std::string name, Case c) {
    c.seed = static_cast<uint32_t>(cases.size() + 100);
    cases.push_back({std::move(name), c});
  };
  Case c;
  c.config = Config(64, 4);
  c.q_len = c.kv_len = 16;
  add("SelfAttention", c);

  c = Case();
  c.config = Config(64, 4);
  c.batch = 3;
  c.q_len = 7;
  c.kv_len = 19;
  c.self_attention = false;
  add("CrossAttentionBatch", c);

  c.batch = 2;
  c.q_len = 19;
  c.kv_len = 5;
  add("CrossAttentionShorterKeys", c);

  c = Case();
  c.config = Config(32, 2);
  c.batch = 2;
  c.q_len = c.kv_len = 13;
  c.causal = true;
  add("CausalSelf", c);

  c.self_attention = false;
  c.q_len = 5;
  c.kv_len = 12;
  add("CausalMoreKeys", c);

  c.q_len = 9;
  c.kv_len = 4;  // first rows see no key at all
  add("CausalFewerKeysMasksFirstRows", c);

  c = Case();
  c.config = Config(32, 4);
  c.batch = 4;
  c.q_len = c.kv_len = 11;
  c.key_lengths = KeyLengths::kWithZero;
  add("KeyLengthsWithZero", c);

  c.key_lengths = KeyLengths::kRandom;
  c.causal = true;
  add("KeyLengthsCausal", c);

  for (MaskKind kind : {MaskKind::kAdditive, MaskKind::kBoolean}) {
    const std::string k = kind == MaskKind::kAdditive ? "Additive" : "Boolean";
    c = Case();
    c.config = Config(48, 3);
    c.batch = 3;
    c.q_len = 6;
    c.kv_len = 10;
    c.self_attention = false;
    c.mask_kind = kind;
    add(k + "MaskBroadcast", c);
    c.mask_per_batch = true;
    add(k + "MaskPerBatch", c);
    c.mask_fully_masked_row = true;
    add(k + "MaskFullyMaskedRow", c);
    c.mask_per_batch = false;
    c.causal = true;
    c.key_lengths = KeyLengths::kRandom;
    add(k + "MaskCausalKeyLengths", c);
  }

  c = Case();
  c.config = Config(64, 8, 2);
  c.batch = 2;
  c.q_len = 9;
  c.kv_len = 14;
  c.self_attention = false;
  add("GroupedQuery8x2", c);
  c.config = Config(64, 8, 1);
  c.causal = true;
  add("MultiQuery8x1Causal", c);

  c = Case();
  c.config = Config(24, 3, 0, 16);  // 3*16 != 24
  c.batch = 2;
  c.q_len = c.kv_len = 5;
  add("CustomHeadDim", c);
  c.config = Config(24, 4, 2, 5, 0.7f);
  add("CustomHeadDimGqaScale", c);

  c = Case();
  c.config = Config(32, 4, 0, 0, 0.5f);
  c.q_len = c.kv_len = 8;
  add("CustomScale", c);
  c.with_bias = false;
  add("NoBias", c);
  c.return_weights = false;
  add("NoWeightsReturned", c);

  c = Case();
  c.config = Config(24, 2);
  c.q_len = c.kv_len = 1;
  add("SingleToken", c);
  c.self_attention = false;
  c.q_len = 1;
  c.kv_len = 23;
  c.batch = 3;
  add("DecodeOneQuery", c);
  c.q_len = 37;
  c.kv_len = 1;
  add("OneKey", c);
  c.q_len = c.kv_len = 37;
  c.self_attention = true;
  c.causal = true;
  add("Odd37", c);

  // Tiling: more query rows than one score tile holds (query blocks).
  c = Case();
  c.config = Config(32, 8, 0, 8);
  c.self_attention = false;
  c.q_len = 300;
  c.kv_len = 1024;
  c.causal = true;
  c.return_weights = true;
  add("QueryBlocks", c);
  // Several batch items per tile, with a partial last tile.
  c = Case();
  c.config = Config(32, 2);
  c.batch = 6;
  c.q_len = c.kv_len = 512;
  c.key_lengths = KeyLengths::kWithZero;
  c.mask_kind = MaskKind::kBoolean;
  c.mask_per_batch = true;
  add("BatchTiles", c);
  // Long sequences: the fp32 core packs keys and values (more than 1024
  // queries); GQA and a head width that is not a multiple of 16.
  c = Case();
  c.config = Config(48, 4, 2, 24);
  c.q_len = c.kv_len = 1100;
  c.causal = true;
  c.mask_kind = MaskKind::kAdditive;
  add("LongPackedCausal", c);
  c = Case();
  c.config = Config(48, 4, 2, 24);
  c.self_attention = false;
  c.batch = 2;
  c.q_len = 1030;
  c.kv_len = 1300;
  c.key_lengths = KeyLengths::kWithZero;
  c.mask_kind = MaskKind::kBoolean;
  c.mask_per_batch = true;
  add("LongPackedCross", c);
  return cases;
}

// Runs `c` on a layer created with ATTN_KERNEL_ISA=isa (the variable is
// read only when a layer is created) and compares it with the reference.
Comparison RunWithIsa(const Case& c, const char* isa) {
  const CaseData data = MakeCaseData(c);
  if (setenv("ATTN_KERNEL_ISA", isa, 1) != 0) {
    Comparison failed;
    failed.error = "setenv failed";
    return failed;
  }
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  unsetenv("ATTN_KERNEL_ISA");
  if (!mha.ok()) {
    Comparison failed;
    failed.error = mha.status().ToString();
    return failed;
  }
  return RunAndCompare(c, data, mha->get());
}

class FeatureTest : public ::testing::TestWithParam<NamedCase> {};

TEST_P(FeatureTest, MatchesReference) {
  const Case& c = GetParam().c;
  const CaseData data = MakeCaseData(c);
  const Comparison r = RunAndCompare(c, data, nullptr);
  ASSERT_EQ(r.error, "") << c.DebugString();
  RecordErrors(r);
  EXPECT_FALSE(r.has_non_finite) << c.DebugString();
  EXPECT_LE(r.max_output_error, kFp32Tolerance) << c.DebugString();
  EXPECT_LE(r.max_weights_error, kFp32Tolerance) << c.DebugString();
}

// Without returned weights the tiled online-softmax core runs instead of the
// materialising one: same cases, same tolerance.
TEST_P(FeatureTest, FlashCoreMatchesReference) {
  Case c = GetParam().c;
  c.return_weights = false;
  const CaseData data = MakeCaseData(c);
  const Comparison r = RunAndCompare(c, data, nullptr);
  ASSERT_EQ(r.error, "") << c.DebugString();
  RecordErrors(r);
  EXPECT_FALSE(r.has_non_finite) << c.DebugString();
  EXPECT_LE(r.max_output_error, kFp32Tolerance) << c.DebugString();
}

// bf16 (projections and the flash core in bf16, fp32 accumulation and
// softmax): |err| <= kBf16Tolerance * (1 + |ref|).
TEST_P(FeatureTest, Bf16MatchesReference) {
  Case c = GetParam().c;
  c.config.compute_dtype = ComputeDType::kBFloat16;
  for (bool weights : {false, true}) {
    c.return_weights = weights;
    const CaseData data = MakeCaseData(c);
    const Comparison r = RunAndCompare(c, data, nullptr);
    ASSERT_EQ(r.error, "") << c.DebugString();
    RecordErrors(r);
    EXPECT_FALSE(r.has_non_finite) << c.DebugString();
    EXPECT_LE(r.max_output_scaled_error, kBf16Tolerance) << c.DebugString();
    EXPECT_LE(r.max_weights_error, kBf16Tolerance) << c.DebugString();
  }
}

INSTANTIATE_TEST_SUITE_P(Features, FeatureTest,
                         ::testing::ValuesIn(FeatureCases()),
                         [](const ::testing::TestParamInfo<NamedCase>& info) {
                           return info.param.name;
                         });

// Every core path this CPU runs (SupportedKernelIsas: scalar, each Highway
// target, avx512, avx512_bf16, amx_bf16 where present), forced through
// ATTN_KERNEL_ISA, on every feature case: the fp32 layer within the fp32
// tolerance, the bf16 layer within the bf16 one. Names end in the path.
class CorePathTest
    : public ::testing::TestWithParam<std::tuple<NamedCase, std::string>> {};

TEST_P(CorePathTest, MatchesReference) {
  Case c = std::get<0>(GetParam()).c;
  const std::string& isa = std::get<1>(GetParam());
  c.return_weights = false;
  for (ComputeDType dtype : {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
    c.config.compute_dtype = dtype;
    const Comparison r = RunWithIsa(c, isa.c_str());
    ASSERT_EQ(r.error, "") << isa << " " << c.DebugString();
    EXPECT_FALSE(r.has_non_finite) << isa << " " << c.DebugString();
    if (dtype == ComputeDType::kFloat32) {
      EXPECT_LE(r.max_output_error, kFp32Tolerance)
          << isa << " " << c.DebugString();
    } else {
      EXPECT_LE(r.max_output_scaled_error, kBf16Tolerance)
          << isa << " " << c.DebugString();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, CorePathTest,
    ::testing::Combine(::testing::ValuesIn(FeatureCases()),
                       ::testing::ValuesIn(SupportedKernelIsas())),
    [](const ::testing::TestParamInfo<CorePathTest::ParamType>& info) {
      return std::get<0>(info.param).name + "_" + std::get<1>(info.param);
    });

// Random shapes and feature combinations, seeded.
std::vector<Case> RandomCases(int count, bool bf16) {
  std::mt19937 rng(bf16 ? 4242 : 2024);
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  std::vector<Case> cases;
  for (int n = 0; n < count; ++n) {
    Case c;
    const int kv_heads = pick(1, 3);
    const int heads = kv_heads * pick(1, 3);
    const int head_dim = pick(1, 4) * 4 + (pick(0, 3) == 0 ? 1 : 0);
    const bool default_head_dim = pick(0, 1) == 0;
    c.config.d_model = default_head_dim ? heads * head_dim : pick(4, 40);
    c.config.num_heads = heads;
    c.config.num_kv_heads = (kv_heads == heads && pick(0, 1)) ? 0 : kv_heads;
    c.config.head_dim = default_head_dim ? 0 : head_dim;
    c.config.scale = pick(0, 2) == 0 ? 0.3f : 0.0f;
    if (bf16) c.config.compute_dtype = ComputeDType::kBFloat16;
    c.batch = pick(1, 4);
    c.self_attention = pick(0, 2) == 0;
    c.q_len = pick(1, 40);
    c.kv_len = c.self_attention ? c.q_len : pick(1, 40);
    c.causal = pick(0, 2) == 0;
    c.key_lengths = static_cast<KeyLengths>(pick(0, 2));
    c.mask_kind = static_cast<MaskKind>(pick(0, 2));
    c.mask_per_batch = pick(0, 1) == 1;
    c.mask_fully_masked_row = pick(0, 3) == 0;
    c.with_bias = pick(0, 3) != 0;
    c.return_weights = pick(0, 2) != 0;
    c.seed = 1000 + n;
    cases.push_back(c);
  }
  return cases;
}

class RandomTest : public ::testing::TestWithParam<Case> {};

TEST_P(RandomTest, MatchesReference) {
  const Case& c = GetParam();
  const CaseData data = MakeCaseData(c);
  const Comparison r = RunAndCompare(c, data, nullptr);
  ASSERT_EQ(r.error, "") << c.DebugString();
  RecordErrors(r);
  EXPECT_FALSE(r.has_non_finite) << c.DebugString();
  if (c.config.compute_dtype == ComputeDType::kBFloat16) {
    EXPECT_LE(r.max_output_scaled_error, kBf16Tolerance) << c.DebugString();
    EXPECT_LE(r.max_weights_error, kBf16Tolerance) << c.DebugString();
  } else {
    EXPECT_LE(r.max_output_error, kFp32Tolerance) << c.DebugString();
    EXPECT_LE(r.max_weights_error, kFp32Tolerance) << c.DebugString();
  }
}

INSTANTIATE_TEST_SUITE_P(Fp32, RandomTest,
                         ::testing::ValuesIn(RandomCases(80, false)));
INSTANTIATE_TEST_SUITE_P(Bf16, RandomTest,
                         ::testing::ValuesIn(RandomCases(20, true)));

// The bf16 accuracy bar: on unit-scale inputs the bf16 layer is
// within 2e-2 (absolute) of the fp32 layer, at a realistic width and length
// (several key blocks, causal and not).
TEST(AttentionTest, Bf16WithinTwoHundredthsOfFp32) {
  for (bool causal : {false, true}) {
    Case c;
    c.config = Config(256, 4);
    c.q_len = c.kv_len = 200;
    c.causal = causal;
    c.return_weights = false;
    const CaseData data = MakeCaseData(c);
    auto fp32 = MultiHeadAttention::Create(c.config, data.weights);
    AttentionConfig bf16_config = c.config;
    bf16_config.compute_dtype = ComputeDType::kBFloat16;
    auto bf16 = MultiHeadAttention::Create(bf16_config, data.weights);
    ASSERT_TRUE(fp32.ok() && bf16.ok());
    std::vector<float> a(c.q_len * 256), b(c.q_len * 256);
    ASSERT_TRUE((*fp32)->Forward(data.input, {a.data()}).ok());
    ASSERT_TRUE((*bf16)->Forward(data.input, {b.data()}).ok());
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, double(std::abs(a[i] - b[i])));
      scale = std::max(scale, double(std::abs(a[i])));
    }
    RecordErrors({worst, 0, 0, false, ""});
    EXPECT_LE(worst, 2e-2) << "causal=" << causal;
    EXPECT_GT(scale, 0.1);  // outputs are unit-scale, not vanishing
  }
}

// Fully masked rows are exact zeros (output bias not added), never NaN.
TEST(AttentionTest, FullyMaskedRowsAreExactZeros) {
  Case c;
  c.config = Config(32, 4);
  c.batch = 3;
  c.q_len = 4;
  c.kv_len = 6;
  c.self_attention = false;
  c.with_bias = true;
  c.key_lengths = KeyLengths::kWithZero;  // batch item 0 sees no key
  CaseData data = MakeCaseData(c);
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  std::vector<float> out(c.batch * c.q_len * c.config.d_model, -1.0f);
  std::vector<float> weights(c.batch * 4 * c.q_len * c.kv_len, -1.0f);
  ASSERT_TRUE((*mha)->Forward(data.input, {out.data(), weights.data()}).ok());
  const int64_t item = c.q_len * c.config.d_model;
  for (int64_t i = 0; i < item; ++i) ASSERT_EQ(out[i], 0.0f) << i;
  for (int64_t i = 0; i < 4 * c.q_len * c.kv_len; ++i) {
    ASSERT_EQ(weights[i], 0.0f) << i;
  }
  // Other batch items are not zero.
  double norm = 0;
  for (size_t i = item; i < out.size(); ++i) norm += std::abs(out[i]);
  EXPECT_GT(norm, 0.1);
}

// Weights rows sum to one for rows that see at least one key.
TEST(AttentionTest, WeightRowsSumToOne) {
  Case c;
  c.config = Config(16, 2);
  c.batch = 2;
  c.q_len = c.kv_len = 9;
  c.causal = true;
  c.mask_kind = MaskKind::kAdditive;
  CaseData data = MakeCaseData(c);
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  std::vector<float> out(c.batch * c.q_len * 16);
  std::vector<float> w(c.batch * 2 * c.q_len * c.kv_len);
  ASSERT_TRUE((*mha)->Forward(data.input, {out.data(), w.data()}).ok());
  const reference::ReferenceResult ref =
      reference::ReferenceAttention(c.config, data.weights, data.input);
  for (int64_t r = 0; r < c.batch * 2 * c.q_len; ++r) {
    double sum = 0, ref_sum = 0;
    for (int64_t j = 0; j < c.kv_len; ++j) {
      sum += w[r * c.kv_len + j];
      ref_sum += ref.weights[r * c.kv_len + j];
    }
    EXPECT_NEAR(sum, ref_sum, 1e-5) << "row " << r;
  }
}

// The same object serves many shapes; cached primitives stay correct.
TEST(AttentionTest, ReusesObjectAcrossShapes) {
  Case c;
  c.config = Config(32, 4, 2);
  c.self_attention = false;
  CaseData first = MakeCaseData(c);
  auto mha = MultiHeadAttention::Create(c.config, first.weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  for (int round = 0; round < 2; ++round) {
    for (int64_t len : {1, 5, 17, 5, 1}) {
      c.q_len = len;
      c.kv_len = len + 3;
      c.batch = 1 + len % 3;
      CaseData data = MakeCaseData(c);  // same seed: same weights
      const Comparison r = RunAndCompare(c, data, mha->get());
      ASSERT_EQ(r.error, "");
      EXPECT_LE(r.max_output_error, kFp32Tolerance) << c.DebugString();
    }
  }
}

}  // namespace
}  // namespace attn::kernels::testing
