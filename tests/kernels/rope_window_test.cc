// Rotary position embeddings and sliding windows in stateless Forward,
// against the naive double reference (tests/kernels/reference_attention),
// and their validation.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/kernel_isa.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels {
namespace {

using testing::Case;
using testing::KeyLengths;
using RopeStyle = AttentionConfig::RopeStyle;

constexpr double kFp32Tolerance = 1e-4;
// bf16 GEMMs (or their emulation): |error| / (1 + |reference|).
constexpr double kBf16Tolerance = 5e-2;

Case RopeCase(int64_t heads, int64_t kv_heads, int64_t d_model, RopeStyle style,
              int64_t rope_dims, int64_t window, int64_t seq) {
  Case c;
  c.config.d_model = d_model;
  c.config.num_heads = heads;
  c.config.num_kv_heads = kv_heads;
  c.config.rope_theta = 10000.0;
  c.config.rope_style = style;
  c.config.rope_dims = rope_dims;
  c.config.sliding_window = window;
  c.q_len = c.kv_len = seq;
  c.causal = true;
  c.return_weights = false;
  return c;
}

// Every case on every core path this CPU runs (ATTN_KERNEL_ISA), fp32 and
// bf16 layers (sliding-window bf16 layers run the fp32 core: attention.cc).
class RopeWindowCaseTest
    : public ::testing::TestWithParam<std::tuple<Case, std::string>> {};

TEST_P(RopeWindowCaseTest, MatchesReference) {
  const std::string& isa = std::get<1>(GetParam());
  for (ComputeDType dtype : {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
    Case c = std::get<0>(GetParam());
    c.config.compute_dtype = dtype;
    const testing::CaseData data = testing::MakeCaseData(c);
    ASSERT_EQ(setenv("ATTN_KERNEL_ISA", isa.c_str(), 1), 0);
    auto mha = MultiHeadAttention::Create(c.config, data.weights);
    unsetenv("ATTN_KERNEL_ISA");
    ASSERT_TRUE(mha.ok()) << mha.status();
    const testing::Comparison r = testing::RunAndCompare(c, data, mha->get());
    ASSERT_EQ(r.error, "") << c.DebugString();
    EXPECT_FALSE(r.has_non_finite) << c.DebugString();
    if (dtype == ComputeDType::kFloat32) {
      EXPECT_LE(r.max_output_error, kFp32Tolerance)
          << isa << " " << (*mha)->ImplementationSummary() << " "
          << c.DebugString();
    } else {
      EXPECT_LE(r.max_output_scaled_error, kBf16Tolerance)
          << isa << " " << (*mha)->ImplementationSummary() << " "
          << c.DebugString();
    }
    if (c.config.sliding_window > 0) {
      // Windowed layers never run the packing bf16 cores.
      const std::string summary = (*mha)->ImplementationSummary();
      EXPECT_EQ(summary.find("core amx"), std::string::npos) << summary;
      EXPECT_EQ(summary.find("core avx512_bf16"), std::string::npos) << summary;
    }
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  // RoPE only: half / interleaved / partial, MHA and GQA, causal or not.
  cases.push_back(RopeCase(4, 4, 64, RopeStyle::kHalf, 0, 0, 37));
  cases.push_back(RopeCase(4, 2, 64, RopeStyle::kInterleaved, 0, 0, 50));
  cases.push_back(RopeCase(8, 2, 128, RopeStyle::kHalf, 8, 0, 29));
  Case bidir = RopeCase(4, 1, 64, RopeStyle::kHalf, 0, 0, 40);
  bidir.causal = false;
  bidir.batch = 2;
  cases.push_back(bidir);
  // Sliding window without RoPE, and with: windows smaller than, across and
  // larger than the 64-row blocks; batch > 1; key lengths; weights (masked
  // path); explicit masks.
  Case w = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 9, 150);
  w.config.rope_theta = 0.0;
  cases.push_back(w);
  cases.push_back(RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 70, 200));
  cases.push_back(RopeCase(4, 4, 64, RopeStyle::kInterleaved, 0, 1, 70));
  Case wb = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 33, 131);
  wb.batch = 3;
  wb.key_lengths = KeyLengths::kRandom;
  cases.push_back(wb);
  Case ww = RopeCase(2, 1, 32, RopeStyle::kHalf, 0, 12, 45);
  ww.return_weights = true;
  cases.push_back(ww);
  Case wm = RopeCase(2, 2, 32, RopeStyle::kHalf, 0, 16, 80);
  wm.mask_kind = MaskKind::kBoolean;
  cases.push_back(wm);
  Case wa = RopeCase(2, 1, 32, RopeStyle::kHalf, 0, 16, 80);
  wa.mask_kind = MaskKind::kAdditive;
  wa.mask_per_batch = true;
  wa.batch = 2;
  cases.push_back(wa);
  Case big = RopeCase(4, 4, 64, RopeStyle::kHalf, 0, 500, 300);  // W > S
  cases.push_back(big);
  // Cross-attention (causal, kv_len > q_len) on a window layer without RoPE.
  Case cross = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 20, 90);
  cross.config.rope_theta = 0.0;
  cross.self_attention = false;
  cross.kv_len = 130;
  cases.push_back(cross);
  uint32_t seed = 1;
  for (Case& c : cases) c.seed = seed++;
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, RopeWindowCaseTest,
    ::testing::Combine(::testing::ValuesIn(Cases()),
                       ::testing::ValuesIn(SupportedKernelIsas())),
    [](const ::testing::TestParamInfo<RopeWindowCaseTest::ParamType>& info) {
      return "Case" + std::to_string(std::get<0>(info.param).seed) + "_" +
             std::get<1>(info.param);
    });

// RoPE changes the answer: the same layer without it differs (the test
// would pass trivially if RoPE were never applied).
TEST(RopeTest, RotationChangesOutput) {
  Case c = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 0, 20);
  const testing::CaseData data = testing::MakeCaseData(c);
  Case plain = c;
  plain.config.rope_theta = 0.0;
  const testing::Comparison r = testing::RunAndCompare(plain, data, nullptr);
  ASSERT_EQ(r.error, "");
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(mha.ok());
  std::vector<float> a(20 * 64), b(20 * 64);
  ASSERT_TRUE((*mha)->Forward(data.input, AttentionOutput{a.data()}).ok());
  auto mha_plain = MultiHeadAttention::Create(plain.config, data.weights);
  ASSERT_TRUE(mha_plain.ok());
  ASSERT_TRUE(
      (*mha_plain)->Forward(data.input, AttentionOutput{b.data()}).ok());
  double diff = 0.0;
  for (size_t i = 64; i < a.size(); ++i)
    diff = std::max<double>(diff, std::abs(a[i] - b[i]));
  EXPECT_GT(diff, 1e-2);
  // Row 0 is at position 0 (no rotation): identical.
  for (size_t i = 0; i < 64; ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
}

// ForwardBatch merges windowed items of different lengths (split into
// windowed sequences), a masked one (window baked into its mask) and one
// that returns weights, with RoPE: each item equals its own Forward.
TEST(RopeTest, ForwardBatchMatchesForwardPerItem) {
  std::vector<Case> cases;
  for (int64_t seq : {150, 7, 70}) {
    cases.push_back(RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 20, seq));
  }
  cases[1].mask_kind = MaskKind::kBoolean;
  Case weights = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 20, 33);
  weights.return_weights = true;
  cases.push_back(weights);
  Case batched = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 20, 90);
  batched.batch = 2;
  batched.key_lengths = KeyLengths::kRandom;
  cases.push_back(batched);
  std::vector<testing::CaseData> data;
  for (size_t i = 0; i < cases.size(); ++i) {
    cases[i].seed = 40 + static_cast<uint32_t>(i);
    data.push_back(testing::MakeCaseData(cases[i]));
  }
  // One layer: every case has the same config and seeds only change data,
  // so use the first case's weights for all.
  auto mha = MultiHeadAttention::Create(cases[0].config, data[0].weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  std::vector<AttentionInput> inputs;
  std::vector<AttentionOutput> outputs;
  std::vector<std::vector<float>> batch_out(cases.size()),
      batch_weights(cases.size()), alone(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const size_t n = static_cast<size_t>(c.batch * c.q_len * 64);
    batch_out[i].assign(n, 0.0f);
    alone[i].assign(n, 0.0f);
    AttentionOutput o{batch_out[i].data()};
    if (c.return_weights) {
      batch_weights[i].assign(
          static_cast<size_t>(c.batch * 4 * c.q_len * c.kv_len), 0.0f);
      o.weights = batch_weights[i].data();
    }
    inputs.push_back(data[i].input);
    outputs.push_back(o);
    ASSERT_TRUE(
        (*mha)->Forward(data[i].input, AttentionOutput{alone[i].data()}).ok());
  }
  ASSERT_TRUE((*mha)->ForwardBatch(inputs, outputs).ok());
  for (size_t i = 0; i < cases.size(); ++i) {
    for (size_t e = 0; e < alone[i].size(); ++e) {
      ASSERT_NEAR(batch_out[i][e], alone[i][e], 1e-5)
          << "item " << i << " element " << e;
    }
  }
}

TEST(RopeTest, CreateValidatesSettings) {
  Case c = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 0, 4);
  const testing::CaseData data = testing::MakeCaseData(c);
  auto expect_invalid = [&](AttentionConfig config, const std::string& word) {
    auto mha = MultiHeadAttention::Create(config, data.weights);
    ASSERT_FALSE(mha.ok());
    EXPECT_EQ(mha.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(mha.status().message()).find(word), std::string::npos)
        << mha.status();
  };
  AttentionConfig bad = c.config;
  bad.rope_dims = 7;
  expect_invalid(bad, "rope_dims");
  bad.rope_dims = 18;  // > head_dim 16
  expect_invalid(bad, "rope_dims");
  bad = c.config;
  bad.rope_theta = -1.0;
  expect_invalid(bad, "rope_theta");
  bad = c.config;
  bad.rope_theta = 0.0;
  bad.rope_dims = 8;
  expect_invalid(bad, "rope_theta");
  bad = c.config;
  bad.sliding_window = -3;
  expect_invalid(bad, "sliding_window");
  auto ok = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)->config().rope_dims, 16);
}

TEST(RopeTest, RefusesCrossAttentionAndNonCausalWindows) {
  Case c = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 0, 6);
  c.self_attention = false;
  const testing::CaseData data = testing::MakeCaseData(c);
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(mha.ok());
  std::vector<float> out(6 * 64);
  absl::Status s = (*mha)->Forward(data.input, AttentionOutput{out.data()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("cross-attention"), std::string::npos)
      << s;

  Case w = RopeCase(4, 2, 64, RopeStyle::kHalf, 0, 3, 6);
  w.causal = false;
  const testing::CaseData wdata = testing::MakeCaseData(w);
  auto wmha = MultiHeadAttention::Create(w.config, wdata.weights);
  ASSERT_TRUE(wmha.ok());
  s = (*wmha)->Forward(wdata.input, AttentionOutput{out.data()});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("causal"), std::string::npos) << s;
}

}  // namespace
}  // namespace attn::kernels
