// ForwardBatch over mixed items (lengths, masks, causality, cross-attention,
// batch sizes, returned weights) equals per-item Forward.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

constexpr double kBatchTolerance = 1e-5;

// Mixed items for one layer configuration.
std::vector<Case> MixedItems(const AttentionConfig& config) {
  std::vector<Case> items;
  auto add = [&](Case c) {
    c.config = config;
    c.seed = static_cast<uint32_t>(500 + items.size());
    items.push_back(c);
  };
  Case c;
  c.return_weights = false;
  c.q_len = c.kv_len = 16;
  add(c);
  c.batch = 3;
  c.q_len = c.kv_len = 7;
  c.causal = true;
  add(c);
  c = Case();
  c.return_weights = false;
  c.self_attention = false;
  c.batch = 2;
  c.q_len = 5;
  c.kv_len = 70;  // two key blocks
  c.key_lengths = KeyLengths::kWithZero;
  add(c);
  c = Case();
  c.return_weights = true;  // materialising core for this item
  c.q_len = c.kv_len = 9;
  c.mask_kind = MaskKind::kAdditive;
  c.mask_fully_masked_row = true;
  add(c);
  c = Case();
  c.return_weights = false;
  c.batch = 2;
  c.q_len = c.kv_len = 130;  // several query and key blocks
  c.causal = true;
  c.mask_kind = MaskKind::kBoolean;
  c.mask_per_batch = true;
  add(c);
  c = Case();
  c.return_weights = false;
  c.self_attention = false;
  c.q_len = 1;
  c.kv_len = 33;
  c.causal = true;
  add(c);
  c = Case();
  c.return_weights = false;
  c.q_len = c.kv_len = 1;
  add(c);
  return items;
}

void ExpectBatchMatchesForward(const AttentionConfig& config) {
  const std::vector<Case> items = MixedItems(config);
  std::vector<CaseData> data;
  for (const Case& c : items) data.push_back(MakeCaseData(c));
  auto mha = MultiHeadAttention::Create(config, data[0].weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  const int64_t heads = config.num_heads;
  const int64_t d = config.d_model;

  std::vector<std::vector<float>> single(items.size()), batched(items.size());
  std::vector<std::vector<float>> single_w(items.size()),
      batched_w(items.size());
  std::vector<AttentionInput> inputs;
  std::vector<AttentionOutput> outputs;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i < items.size(); ++i) {
    const Case& c = items[i];
    single[i].assign(c.batch * c.q_len * d, nan);
    batched[i].assign(c.batch * c.q_len * d, nan);
    AttentionOutput out_single{single[i].data(), nullptr};
    AttentionOutput out_batched{batched[i].data(), nullptr};
    if (c.return_weights) {
      single_w[i].assign(c.batch * heads * c.q_len * c.kv_len, nan);
      batched_w[i].assign(single_w[i].size(), nan);
      out_single.weights = single_w[i].data();
      out_batched.weights = batched_w[i].data();
    }
    ASSERT_TRUE((*mha)->Forward(data[i].input, out_single).ok()) << i;
    inputs.push_back(data[i].input);
    outputs.push_back(out_batched);
  }
  ASSERT_TRUE((*mha)->ForwardBatch(inputs, outputs).ok());
  for (size_t i = 0; i < items.size(); ++i) {
    double worst = 0.0;
    for (size_t k = 0; k < single[i].size(); ++k) {
      ASSERT_TRUE(std::isfinite(batched[i][k])) << "item " << i << " @" << k;
      worst = std::max(worst, double(std::abs(single[i][k] - batched[i][k])));
    }
    EXPECT_LE(worst, kBatchTolerance) << items[i].DebugString();
    for (size_t k = 0; k < single_w[i].size(); ++k) {
      ASSERT_NEAR(single_w[i][k], batched_w[i][k], kBatchTolerance)
          << "item " << i << " weight " << k;
    }
  }
}

TEST(ForwardBatchTest, MixedItemsMatchForward) {
  AttentionConfig config;
  config.d_model = 64;
  config.num_heads = 4;
  ExpectBatchMatchesForward(config);
}

TEST(ForwardBatchTest, MixedItemsMatchForwardGqa) {
  AttentionConfig config;
  config.d_model = 48;
  config.num_heads = 6;
  config.num_kv_heads = 2;
  config.head_dim = 20;  // not a multiple of 16: masked vector tails
  ExpectBatchMatchesForward(config);
}

TEST(ForwardBatchTest, MixedItemsMatchForwardBf16) {
  AttentionConfig config;
  config.d_model = 64;
  config.num_heads = 2;
  config.compute_dtype = ComputeDType::kBFloat16;
  ExpectBatchMatchesForward(config);
}

// 64 requests of 16 tokens (the server's small-request batch).
TEST(ForwardBatchTest, ManySmallRequests) {
  AttentionConfig config;
  config.d_model = 32;
  config.num_heads = 2;
  std::vector<Case> items;
  for (int i = 0; i < 64; ++i) {
    Case c;
    c.config = config;
    c.q_len = c.kv_len = 16;
    c.causal = i % 3 == 0;
    c.return_weights = false;
    c.seed = 700 + i;
    items.push_back(c);
  }
  std::vector<CaseData> data;
  for (const Case& c : items) data.push_back(MakeCaseData(c));
  auto mha = MultiHeadAttention::Create(config, data[0].weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  std::vector<std::vector<float>> single(64), batched(64);
  std::vector<AttentionInput> inputs;
  std::vector<AttentionOutput> outputs;
  for (int i = 0; i < 64; ++i) {
    single[i].resize(16 * 32);
    batched[i].resize(16 * 32);
    ASSERT_TRUE((*mha)->Forward(data[i].input, {single[i].data()}).ok());
    inputs.push_back(data[i].input);
    outputs.push_back({batched[i].data()});
  }
  ASSERT_TRUE((*mha)->ForwardBatch(inputs, outputs).ok());
  for (int i = 0; i < 64; ++i) {
    for (size_t k = 0; k < single[i].size(); ++k) {
      ASSERT_NEAR(single[i][k], batched[i][k], kBatchTolerance) << i;
    }
  }
}

TEST(ForwardBatchTest, ErrorsNameTheItem) {
  AttentionConfig config;
  config.d_model = 16;
  config.num_heads = 2;
  Case c;
  c.config = config;
  c.q_len = c.kv_len = 4;
  CaseData data = MakeCaseData(c);
  auto mha = MultiHeadAttention::Create(config, data.weights);
  ASSERT_TRUE(mha.ok());
  std::vector<float> out(4 * 16);
  AttentionInput bad = data.input;
  bad.q_len = 0;
  std::vector<AttentionInput> inputs = {data.input, bad};
  std::vector<AttentionOutput> outputs = {{out.data()}, {out.data()}};
  const absl::Status s = (*mha)->ForwardBatch(inputs, outputs);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("batch item 1"), absl::string_view::npos)
      << s.message();
  outputs.pop_back();
  EXPECT_EQ((*mha)->ForwardBatch(inputs, outputs).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*mha)->ForwardBatch({}, {}).ok());
}

}  // namespace
}  // namespace attn::kernels::testing
