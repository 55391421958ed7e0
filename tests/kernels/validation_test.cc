// Create() and Forward() reject invalid configurations, weights and inputs
// with INVALID_ARGUMENT and a message naming the field.
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

using ::testing::HasSubstr;

AttentionConfig Valid() {
  AttentionConfig c;
  c.d_model = 32;
  c.num_heads = 4;
  return c;
}

AttentionWeights WeightsFor(const AttentionConfig& c, bool bias = true) {
  std::mt19937 rng(7);
  return RandomWeights(rng, c, bias);
}

void ExpectCreateError(const AttentionConfig& c, const AttentionWeights& w,
                       const std::string& needle) {
  auto mha = MultiHeadAttention::Create(c, w);
  ASSERT_FALSE(mha.ok());
  EXPECT_EQ(mha.status().code(), absl::StatusCode::kInvalidArgument)
      << mha.status();
  EXPECT_THAT(std::string(mha.status().message()), HasSubstr(needle));
}

TEST(CreateTest, ResolvesDefaults) {
  AttentionConfig c = Valid();
  auto mha = MultiHeadAttention::Create(c, WeightsFor(c));
  ASSERT_TRUE(mha.ok()) << mha.status();
  EXPECT_EQ((*mha)->config().num_kv_heads, 4);
  EXPECT_EQ((*mha)->config().head_dim, 8);
  EXPECT_FLOAT_EQ((*mha)->config().scale, 1.0f / std::sqrt(8.0f));
}

TEST(CreateTest, KeepsExplicitValues) {
  AttentionConfig c = Valid();
  c.num_kv_heads = 2;
  c.head_dim = 6;
  c.scale = 0.25f;
  auto mha = MultiHeadAttention::Create(c, WeightsFor(c, false));
  ASSERT_TRUE(mha.ok()) << mha.status();
  EXPECT_EQ((*mha)->config().num_kv_heads, 2);
  EXPECT_EQ((*mha)->config().head_dim, 6);
  EXPECT_EQ((*mha)->config().scale, 0.25f);
}

TEST(CreateTest, RejectsBadDimensions) {
  AttentionConfig c = Valid();
  const AttentionWeights w = WeightsFor(c);
  c.d_model = 0;
  ExpectCreateError(c, w, "d_model");
  c = Valid();
  c.num_heads = 0;
  ExpectCreateError(c, w, "num_heads");
  c = Valid();
  c.num_heads = -2;
  ExpectCreateError(c, w, "num_heads");
  c = Valid();
  c.num_kv_heads = 3;
  ExpectCreateError(c, w, "num_kv_heads (3) must divide num_heads (4)");
  c = Valid();
  c.num_kv_heads = -1;
  ExpectCreateError(c, w, "num_kv_heads");
  c = Valid();
  c.d_model = 30;  // 4 heads do not divide 30 and head_dim is unset
  ExpectCreateError(c, w, "head_dim");
  c = Valid();
  c.head_dim = -4;
  ExpectCreateError(c, w, "head_dim");
}

TEST(CreateTest, RejectsBadScale) {
  AttentionConfig c = Valid();
  const AttentionWeights w = WeightsFor(c);
  c.scale = -1.0f;
  ExpectCreateError(c, w, "scale");
  c.scale = std::numeric_limits<float>::quiet_NaN();
  ExpectCreateError(c, w, "scale");
  c.scale = std::numeric_limits<float>::infinity();
  ExpectCreateError(c, w, "scale");
}

TEST(CreateTest, RejectsWrongWeightSizes) {
  const AttentionConfig c = Valid();
  AttentionWeights w = WeightsFor(c);
  w.wq.pop_back();
  ExpectCreateError(c, w,
                    "wq has 1023 elements, expected "
                    "num_heads*head_dim*d_model = 1024");
  w = WeightsFor(c);
  w.wk.resize(1000);
  ExpectCreateError(c, w,
                    "wk has 1000 elements, expected "
                    "num_kv_heads*head_dim*d_model = 1024");
  w = WeightsFor(c);
  w.wv.clear();
  ExpectCreateError(c, w, "wv has 0 elements");
  w = WeightsFor(c);
  w.wo.push_back(1.0f);
  ExpectCreateError(c, w, "wo has 1025 elements");
  w = WeightsFor(c);
  w.bq.resize(31);
  ExpectCreateError(c, w, "bq has 31 elements");
  w = WeightsFor(c);
  w.bk.resize(33);
  ExpectCreateError(c, w, "bk");
  w = WeightsFor(c);
  w.bv.resize(1);
  ExpectCreateError(c, w, "bv");
  w = WeightsFor(c);
  w.bo.resize(64);
  ExpectCreateError(c, w, "bo has 64 elements, expected d_model = 32");
}

TEST(CreateTest, RejectsGqaWeightsOfWrongShape) {
  AttentionConfig c = Valid();
  const AttentionWeights full = WeightsFor(c);  // kv width 32
  c.num_kv_heads = 2;                           // expects kv width 16
  ExpectCreateError(c, full,
                    "wk has 1024 elements, expected "
                    "num_kv_heads*head_dim*d_model = 512");
}

TEST(CreateTest, RejectsNonFiniteWeights) {
  const AttentionConfig c = Valid();
  AttentionWeights w = WeightsFor(c);
  w.wv[17] = std::numeric_limits<float>::quiet_NaN();
  ExpectCreateError(c, w, "wv has a non-finite value");
  w = WeightsFor(c);
  w.bo[3] = std::numeric_limits<float>::infinity();
  ExpectCreateError(c, w, "bo has a non-finite value");
}

class ForwardValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto mha = MultiHeadAttention::Create(Valid(), WeightsFor(Valid()));
    ASSERT_TRUE(mha.ok()) << mha.status();
    mha_ = *std::move(mha);
    x_.assign(2 * 5 * 32, 0.5f);
    y_.assign(2 * 5 * 32, 0.0f);
    in_.batch = 2;
    in_.q_len = 5;
    in_.kv_len = 5;
    in_.query = in_.key = in_.value = x_.data();
    out_.output = y_.data();
  }

  void ExpectError(const std::string& needle) {
    absl::Status s = mha_->Forward(in_, out_);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(needle));
  }

  std::unique_ptr<MultiHeadAttention> mha_;
  std::vector<float> x_, y_;
  AttentionInput in_;
  AttentionOutput out_;
};

TEST_F(ForwardValidationTest, ValidInputSucceeds) {
  EXPECT_TRUE(mha_->Forward(in_, out_).ok());
}

TEST_F(ForwardValidationTest, NullPointers) {
  out_.output = nullptr;
  ExpectError("output");
  out_.output = y_.data();
  in_.query = nullptr;
  ExpectError("query");
  in_.query = x_.data();
  in_.key = nullptr;
  ExpectError("key");
  in_.key = x_.data();
  in_.value = nullptr;
  ExpectError("value");
}

TEST_F(ForwardValidationTest, NonPositiveSizes) {
  in_.batch = 0;
  ExpectError("batch");
  in_.batch = 2;
  in_.q_len = 0;
  ExpectError("q_len");
  in_.q_len = 5;
  in_.kv_len = -1;
  ExpectError("kv_len");
}

TEST_F(ForwardValidationTest, AliasedKeyNeedsEqualLengths) {
  in_.kv_len = 4;
  ExpectError("kv_len must equal q_len");
  // Separate key/value buffers may have another length.
  std::vector<float> kv(2 * 4 * 32, 0.1f);
  in_.key = in_.value = kv.data();
  EXPECT_TRUE(mha_->Forward(in_, out_).ok());
}

TEST_F(ForwardValidationTest, KeyLengthsOutOfRange) {
  std::vector<int32_t> lengths = {5, 6};
  in_.key_lengths = lengths.data();
  ExpectError("key_lengths[1] is 6");
  lengths = {-1, 2};
  ExpectError("key_lengths[0] is -1");
  lengths = {0, 5};
  EXPECT_TRUE(mha_->Forward(in_, out_).ok());
}

TEST_F(ForwardValidationTest, MaskPointerMustMatchKind) {
  std::vector<float> mask(5 * 5, 0.0f);
  in_.mask = mask.data();
  in_.mask_kind = MaskKind::kNone;
  ExpectError("mask pointer is set but mask_kind is kNone");
  in_.mask = nullptr;
  in_.mask_kind = MaskKind::kAdditive;
  ExpectError("mask pointer is null");
  in_.mask_kind = MaskKind::kBoolean;
  ExpectError("mask pointer is null");
  in_.mask = mask.data();
  in_.mask_kind = MaskKind::kAdditive;
  EXPECT_TRUE(mha_->Forward(in_, out_).ok());
}

}  // namespace
}  // namespace attn::kernels::testing
