#include "server/api/tensor_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attn::server {
namespace {

using ::testing::HasSubstr;

v1::Tensor RawTensor(std::vector<int64_t> shape, v1::DataType dtype,
                     const void* data, size_t bytes) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(dtype);
  t.set_data(std::string(static_cast<const char*>(data), bytes));
  return t;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-4.0f, 4.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(TensorCodecTest, Float32RoundTripIsExact) {
  const std::vector<float> values = RandomFloats(24, 1);
  v1::Tensor t;
  EncodeFloatTensor(values.data(), {2, 3, 4}, v1::FLOAT32, &t);
  EXPECT_THAT(t.shape(), ::testing::ElementsAre(2, 3, 4));
  EXPECT_EQ(t.dtype(), v1::FLOAT32);
  EXPECT_EQ(t.data().size(), 24 * sizeof(float));
  std::vector<float> decoded;
  ASSERT_TRUE(
      DecodeFloatTensor(t, "x", NonFinitePolicy::kReject, &decoded).ok());
  EXPECT_EQ(decoded, values);
}

// Independent bf16 reference: truncation of the bits, then round to nearest
// even done with integer arithmetic on the discarded half.
float ReferenceBf16Round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t lower = u & 0xFFFF;
  uint32_t upper = u >> 16;
  if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) ++upper;
  const uint32_t r = upper << 16;
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

TEST(TensorCodecTest, BFloat16RoundsToNearestEven) {
  const std::vector<float> values = RandomFloats(1000, 2);
  v1::Tensor t;
  EncodeFloatTensor(values.data(), {1000}, v1::BFLOAT16, &t);
  EXPECT_EQ(t.data().size(), 2000u);
  std::vector<float> decoded;
  ASSERT_TRUE(
      DecodeFloatTensor(t, "x", NonFinitePolicy::kReject, &decoded).ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(decoded[i], ReferenceBf16Round(values[i])) << i;
  }
  // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7: rounds to even (1).
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + std::ldexp(1.0f, -8))),
            1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up.
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(
      FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(TensorCodecTest, Float16DecodesKnownBitPatterns) {
  // Bit patterns from IEEE 754 binary16.
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // min subnormal
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // min normal
  EXPECT_EQ(HalfToFloat(0x3555), 0.25f * (1.0f + 0x155 / 1024.0f));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_EQ(std::signbit(HalfToFloat(0x8000)), true);
}

TEST(TensorCodecTest, Float16EncodeRoundTripsEveryFiniteHalf) {
  // Every finite half decodes to a float that encodes back to the same bits.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    if ((h & 0x7C00) == 0x7C00) continue;  // Inf/NaN
    ASSERT_EQ(FloatToHalf(HalfToFloat(h)), h) << std::hex << bits;
  }
  // Rounding: nearest half of random floats is within half a ULP.
  for (float x : RandomFloats(1000, 3)) {
    const float r = HalfToFloat(FloatToHalf(x));
    const float ulp =
        std::max(std::ldexp(1.0f, std::ilogb(x) - 10), std::ldexp(1.0f, -24));
    EXPECT_LE(std::fabs(r - x), 0.5f * ulp) << x;
  }
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(70000.0f))));
  EXPECT_EQ(HalfToFloat(FloatToHalf(65519.0f)), 65504.0f);
  // Tie between 1 and 1 + 2^-10 rounds to even (1).
  EXPECT_EQ(HalfToFloat(FloatToHalf(1.0f + std::ldexp(1.0f, -11))), 1.0f);
}

TEST(TensorCodecTest, Float16TensorRoundTrip) {
  const std::vector<float> values = RandomFloats(64, 4);
  v1::Tensor t;
  EncodeFloatTensor(values.data(), {8, 8}, v1::FLOAT16, &t);
  std::vector<float> decoded;
  ASSERT_TRUE(
      DecodeFloatTensor(t, "x", NonFinitePolicy::kReject, &decoded).ok());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_NEAR(decoded[i], values[i], std::fabs(values[i]) / 1024) << i;
  }
}

TEST(TensorCodecTest, ByteLengthMustMatchExactly) {
  const float v[3] = {1, 2, 3};
  std::vector<float> out;
  absl::Status s = DecodeFloatTensor(RawTensor({2, 2}, v1::FLOAT32, v, 12),
                                     "query", NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("query data has 12 bytes"));
  EXPECT_THAT(s.message(), HasSubstr("16 bytes"));
  // One byte too many is also an error.
  const uint16_t h[3] = {0x3C00, 0x3C00, 0x3C00};
  s = DecodeFloatTensor(RawTensor({2}, v1::FLOAT16, h, 5), "key",
                        NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("key data has 5 bytes"));
}

TEST(TensorCodecTest, NegativeDimsAndOverflowAreRejected) {
  std::vector<float> out;
  absl::Status s = DecodeFloatTensor(RawTensor({2, -1}, v1::FLOAT32, "", 0),
                                     "query", NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("-1"));
  s = DecodeFloatTensor(
      RawTensor({int64_t{1} << 40, int64_t{1} << 40}, v1::FLOAT32, "", 0),
      "query", NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("overflows"));
  s = DecodeFloatTensor(RawTensor({int64_t{1} << 62}, v1::FLOAT32, "", 0),
                        "query", NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("overflows"));
}

TEST(TensorCodecTest, WrongDtypeIsRejected) {
  const uint8_t b[2] = {0, 1};
  std::vector<float> out;
  absl::Status s = DecodeFloatTensor(RawTensor({2}, v1::BOOL, b, 2), "query",
                                     NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("query dtype is BOOL"));
  s = DecodeFloatTensor(RawTensor({2}, v1::DATA_TYPE_UNSPECIFIED, b, 2),
                        "query", NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> mask;
  s = DecodeBoolTensor(RawTensor({2}, v1::FLOAT16, b, 2), "attn_mask", &mask);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("attn_mask dtype is FLOAT16"));
}

TEST(TensorCodecTest, NonFiniteValuesNameTheFlatIndex) {
  std::vector<float> v(12, 0.5f);
  v[7] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out;
  absl::Status s =
      DecodeFloatTensor(RawTensor({3, 4}, v1::FLOAT32, v.data(), 48), "key",
                        NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("key"));
  EXPECT_THAT(s.message(), HasSubstr("NaN"));
  EXPECT_THAT(s.message(), HasSubstr("flat index 7"));

  v[7] = 0;
  v[2] = std::numeric_limits<float>::infinity();
  s = DecodeFloatTensor(RawTensor({3, 4}, v1::FLOAT32, v.data(), 48), "query",
                        NonFinitePolicy::kReject, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("flat index 2"));

  // Inf in bf16 and f16 encodings too.
  const uint16_t bf16[2] = {0x3F80, 0xFF80};  // 1, -Inf
  s = DecodeFloatTensor(RawTensor({2}, v1::BFLOAT16, bf16, 4), "value",
                        NonFinitePolicy::kReject, &out);
  EXPECT_THAT(s.message(), HasSubstr("flat index 1"));
  const uint16_t f16[2] = {0x7E00, 0x3C00};  // NaN, 1
  s = DecodeFloatTensor(RawTensor({2}, v1::FLOAT16, f16, 4), "value",
                        NonFinitePolicy::kReject, &out);
  EXPECT_THAT(s.message(), HasSubstr("flat index 0"));
}

TEST(TensorCodecTest, MaskPolicyAllowsOnlyNegativeInfinity) {
  std::vector<float> v = {0.0f, -std::numeric_limits<float>::infinity(), 1.0f};
  std::vector<float> out;
  EXPECT_TRUE(DecodeFloatTensor(RawTensor({3}, v1::FLOAT32, v.data(), 12),
                                "attn_mask",
                                NonFinitePolicy::kAllowNegativeInfinity, &out)
                  .ok());
  EXPECT_TRUE(std::isinf(out[1]));
  v[2] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(
      DecodeFloatTensor(RawTensor({3}, v1::FLOAT32, v.data(), 12), "attn_mask",
                        NonFinitePolicy::kAllowNegativeInfinity, &out)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(TensorCodecTest, BoolMaskNormalisesNonzeroToOne) {
  const uint8_t b[4] = {0, 1, 7, 255};
  std::vector<uint8_t> out;
  ASSERT_TRUE(
      DecodeBoolTensor(RawTensor({2, 2}, v1::BOOL, b, 4), "attn_mask", &out)
          .ok());
  EXPECT_THAT(out, ::testing::ElementsAre(0, 1, 1, 1));
  EXPECT_EQ(
      DecodeBoolTensor(RawTensor({2, 2}, v1::BOOL, b, 3), "attn_mask", &out)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attn::server
