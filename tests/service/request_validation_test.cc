#include "server/api/request_validation.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/service/fake_model.h"
#include "tests/service/test_tensors.h"

namespace attn::server {
namespace {

using testing::BoolTensor;
using ::testing::HasSubstr;
using testing::MakeFakeModel;
using testing::MakeTensor;
using testing::RandomTensor;
using testing::RandomValues;

constexpr int64_t kD = 8;  // fake model d_model

class RequestValidationTest : public ::testing::Test {
 protected:
  // A valid self-attention request: query [2, 3, 8].
  v1::AttendRequest Valid() const {
    v1::AttendRequest r;
    r.set_model("fake");
    *r.mutable_query() = RandomTensor({2, 3, kD}, 1);
    return r;
  }

  absl::StatusOr<ValidatedRequest> Validate(const v1::AttendRequest& r) const {
    return ValidateAttendRequest(r, model_, limits_);
  }

  // Expects INVALID_ARGUMENT whose message contains `fragment`.
  void ExpectInvalid(const v1::AttendRequest& r, const std::string& fragment) {
    absl::StatusOr<ValidatedRequest> v = Validate(r);
    ASSERT_FALSE(v.ok()) << "accepted; expected error with: " << fragment;
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument)
        << v.status();
    EXPECT_THAT(v.status().message(), HasSubstr(fragment));
  }

  std::shared_ptr<const Model> model_ =
      MakeFakeModel("fake", nullptr, BatchingOptions(), kD, 2,
                    /*max_sequence_length=*/16);
  ValidationLimits limits_;
};

TEST_F(RequestValidationTest, SelfAttentionDefaults) {
  absl::StatusOr<ValidatedRequest> v = Validate(Valid());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->job.batch, 2);
  EXPECT_EQ(v->job.q_len, 3);
  EXPECT_EQ(v->job.kv_len, 3);
  EXPECT_EQ(v->job.query.size(), 2u * 3 * kD);
  EXPECT_TRUE(v->job.key.empty());
  EXPECT_TRUE(v->job.value.empty());
  EXPECT_FALSE(v->job.causal);  // model default
  EXPECT_EQ(v->job.mask_kind, kernels::MaskKind::kNone);
  EXPECT_EQ(v->output_dtype, v1::FLOAT32);
  EXPECT_TRUE(v->output_has_batch_dim);
  EXPECT_EQ(v->job.model, model_);
  // Kernel view aliases key and value to the query.
  kernels::AttentionInput in = v->job.MakeKernelInput();
  EXPECT_EQ(in.key, in.query);
  EXPECT_EQ(in.value, in.query);
}

TEST_F(RequestValidationTest, Rank2QueryCausalAndCrossAttention) {
  v1::AttendRequest r;
  r.set_model("fake");
  *r.mutable_query() = RandomTensor({3, kD}, 1, v1::BFLOAT16);
  *r.mutable_key() = RandomTensor({5, kD}, 2, v1::BFLOAT16);
  r.set_causal(true);
  r.set_output_dtype(v1::FLOAT16);
  absl::StatusOr<ValidatedRequest> v = Validate(r);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->output_has_batch_dim);
  EXPECT_EQ(v->job.batch, 1);
  EXPECT_EQ(v->job.kv_len, 5);
  EXPECT_TRUE(v->job.causal);
  EXPECT_EQ(v->output_dtype, v1::FLOAT16);
  kernels::AttentionInput in = v->job.MakeKernelInput();
  EXPECT_EQ(in.value, in.key);  // value defaults to key
  EXPECT_NE(in.key, in.query);
}

TEST_F(RequestValidationTest, CausalUnsetTakesModelDefault) {
  auto causal_model = std::make_shared<Model>();
  causal_model->name = "c";
  causal_model->config.causal = true;
  causal_model->config.max_sequence_length = 16;
  causal_model->attention.d_model = kD;
  causal_model->attention.num_heads = 2;
  absl::StatusOr<ValidatedRequest> v =
      ValidateAttendRequest(Valid(), causal_model, limits_);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->job.causal);
  v1::AttendRequest r = Valid();
  r.set_causal(false);
  v = ValidateAttendRequest(r, causal_model, limits_);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->job.causal);
}

TEST_F(RequestValidationTest, MasksAndKeyLengths) {
  v1::AttendRequest r = Valid();
  r.add_key_lengths(3);
  r.add_key_lengths(0);
  *r.mutable_attn_mask() = BoolTensor({3, 3}, {0, 1, 0, 0, 0, 2, 1, 0, 0});
  absl::StatusOr<ValidatedRequest> v = Validate(r);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->job.mask_kind, kernels::MaskKind::kBoolean);
  EXPECT_FALSE(v->job.mask_per_batch);
  EXPECT_THAT(v->job.bool_mask,
              ::testing::ElementsAre(0, 1, 0, 0, 0, 1, 1, 0, 0));
  EXPECT_THAT(v->job.key_lengths, ::testing::ElementsAre(3, 0));

  std::vector<float> additive = RandomValues(2 * 3 * 3, 5);
  additive[4] = -std::numeric_limits<float>::infinity();
  *r.mutable_attn_mask() = MakeTensor({2, 3, 3}, additive);
  v = Validate(r);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->job.mask_kind, kernels::MaskKind::kAdditive);
  EXPECT_TRUE(v->job.mask_per_batch);
  EXPECT_EQ(v->job.additive_mask, additive);
}

// One bad-input class per case: the mutation and a fragment of the message.
struct BadCase {
  std::string name;
  std::function<void(v1::AttendRequest*)> mutate;
  std::string fragment;
};

TEST_F(RequestValidationTest, EveryBadInputIsInvalidArgument) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<BadCase> cases = {
      {"query missing", [](auto* r) { r->clear_query(); }, "query is missing"},
      {"query rank 1",
       [](auto* r) { *r->mutable_query() = RandomTensor({kD}, 1); },
       "query has rank 1"},
      {"query rank 4",
       [](auto* r) {
         *r->mutable_query() = RandomTensor({1, 1, 2, kD}, 1);
       },
       "query has rank 4"},
      {"query d_model",
       [](auto* r) {
         *r->mutable_query() = RandomTensor({2, 3, 5}, 1);
       },
       "query last dim is 5, model 'fake' has d_model 8"},
      {"query batch zero",
       [](auto* r) {
         *r->mutable_query() = RandomTensor({0, 3, kD}, 1);
       },
       "batch size 0"},
      {"query seq zero",
       [](auto* r) {
         *r->mutable_query() = RandomTensor({2, 0, kD}, 1);
       },
       "sequence length 0"},
      {"query negative dim",
       [](auto* r) { r->mutable_query()->set_shape(0, -2); }, "-2"},
      {"query too long",
       [](auto* r) {
         *r->mutable_query() = RandomTensor({1, 17, kD}, 1);
       },
       "max_sequence_length 16"},
      {"query dtype bool",
       [](auto* r) { r->mutable_query()->set_dtype(v1::BOOL); },
       "query dtype is BOOL"},
      {"query dtype unspecified",
       [](auto* r) {
         r->mutable_query()->set_dtype(v1::DATA_TYPE_UNSPECIFIED);
       },
       "query dtype is DATA_TYPE_UNSPECIFIED"},
      {"query byte length",
       [](auto* r) { r->mutable_query()->mutable_data()->pop_back(); },
       "query data has 191 bytes"},
      {"query NaN",
       [nan](auto* r) {
         std::vector<float> v = RandomValues(2 * 3 * kD, 1);
         v[9] = nan;
         *r->mutable_query() = MakeTensor({2, 3, kD}, v);
       },
       "flat index 9"},
      {"query Inf",
       [inf](auto* r) {
         std::vector<float> v = RandomValues(2 * 3 * kD, 1);
         v[0] = -inf;
         *r->mutable_query() = MakeTensor({2, 3, kD}, v);
       },
       "query holds a non-finite value (-Inf) at flat index 0"},
      {"key rank",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({4, kD}, 2);
       },
       "key has rank 2"},
      {"key dtype",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({2, 4, kD}, 2, v1::FLOAT16);
       },
       "key dtype is FLOAT16 but query dtype is FLOAT32"},
      {"key batch",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({3, 4, kD}, 2);
       },
       "key batch size is 3 but query batch size is 2"},
      {"key d_model",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({2, 4, 6}, 2);
       },
       "key last dim is 6"},
      {"key too long",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({2, 17, kD}, 2);
       },
       "key sequence length 17 exceeds"},
      {"key NaN",
       [nan](auto* r) {
         std::vector<float> v = RandomValues(2 * 4 * kD, 2);
         v[33] = nan;
         *r->mutable_key() = MakeTensor({2, 4, kD}, v);
       },
       "key holds a non-finite value (NaN) at flat index 33"},
      {"value without key",
       [](auto* r) {
         *r->mutable_value() = RandomTensor({2, 3, kD}, 3);
       },
       "value is given without key"},
      {"value length differs",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({2, 4, kD}, 2);
         *r->mutable_value() = RandomTensor({2, 5, kD}, 3);
       },
       "value sequence length is 5 but key sequence length is 4"},
      {"value d_model",
       [](auto* r) {
         *r->mutable_key() = RandomTensor({2, 4, kD}, 2);
         *r->mutable_value() = RandomTensor({2, 4, 4}, 3);
       },
       "value last dim is 4"},
      {"key_lengths count", [](auto* r) { r->add_key_lengths(1); },
       "key_lengths has 1 entries; expected one per batch item (2)"},
      {"key_lengths too large",
       [](auto* r) {
         r->add_key_lengths(1);
         r->add_key_lengths(4);
       },
       "key_lengths[1] is 4; expected a value in [0, 3]"},
      {"key_lengths negative",
       [](auto* r) {
         r->add_key_lengths(-1);
         r->add_key_lengths(1);
       },
       "key_lengths[0] is -1"},
      {"mask rank",
       [](auto* r) { *r->mutable_attn_mask() = RandomTensor({9}, 4); },
       "attn_mask shape is [9]"},
      {"mask shape",
       [](auto* r) {
         *r->mutable_attn_mask() = RandomTensor({3, 4}, 4);
       },
       "expected [Sq, Sk] = [3, 3] or [B, Sq, Sk] = [2, 3, 3]"},
      {"mask batch",
       [](auto* r) {
         *r->mutable_attn_mask() = RandomTensor({1, 3, 3}, 4);
       },
       "attn_mask shape is [1, 3, 3]"},
      {"mask dtype",
       [](auto* r) {
         *r->mutable_attn_mask() = RandomTensor({3, 3}, 4);
         r->mutable_attn_mask()->set_dtype(v1::DATA_TYPE_UNSPECIFIED);
       },
       "attn_mask dtype is DATA_TYPE_UNSPECIFIED"},
      {"mask bytes",
       [](auto* r) {
         *r->mutable_attn_mask() = BoolTensor({3, 3}, {0, 0, 0, 0});
       },
       "attn_mask data has 4 bytes"},
      {"mask NaN",
       [nan](auto* r) {
         std::vector<float> v(9, 0.0f);
         v[5] = nan;
         *r->mutable_attn_mask() = MakeTensor({3, 3}, v);
       },
       "attn_mask holds a non-finite value (NaN) at flat index 5"},
      {"mask +Inf",
       [inf](auto* r) {
         std::vector<float> v(9, 0.0f);
         v[1] = inf;
         *r->mutable_attn_mask() = MakeTensor({3, 3}, v);
       },
       "flat index 1"},
      {"output dtype bool", [](auto* r) { r->set_output_dtype(v1::BOOL); },
       "output_dtype BOOL is not supported"},
      {"output dtype unknown",
       [](auto* r) { r->set_output_dtype(static_cast<v1::DataType>(42)); },
       "output_dtype DataType(42)"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    v1::AttendRequest r = Valid();
    c.mutate(&r);
    ExpectInvalid(r, c.fragment);
  }
}

TEST_F(RequestValidationTest, ResponseMustFitMaxMessageSize) {
  limits_.max_message_bytes = 1000;
  v1::AttendRequest r = Valid();  // output 2*3*8*4 = 192 bytes: fits
  EXPECT_TRUE(Validate(r).ok());
  *r.mutable_query() = RandomTensor({2, 16, kD}, 1);  // output 1024 bytes
  ExpectInvalid(r, "output would be 256 x 4 bytes");
  r.set_output_dtype(v1::BFLOAT16);  // 512 bytes: fits
  EXPECT_TRUE(Validate(r).ok());
  r.set_return_attention_weights(true);  // weights 2*2*16*16*2 = 2048
  ExpectInvalid(r, "attention_weights would be 1024 x 2 bytes");
}

}  // namespace
}  // namespace attn::server
