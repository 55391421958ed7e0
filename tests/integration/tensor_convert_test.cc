// Unit tests of client/tensor_convert.h.
#include "client/tensor_convert.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace attn {
namespace {

float Bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

TEST(HalfTest, EveryNonNanHalfRoundTrips) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = HalfToFloat(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << bits;
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << "bits 0x" << std::hex << bits;
  }
}

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // ties to even -> infinity
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);  // rounds to zero
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
}

TEST(HalfTest, RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 0x3c01 and 0x3c02: to 0x3c02.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  // Just above the halfway point rounds up.
  EXPECT_EQ(FloatToHalf(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)),
            0x3c01);
}

TEST(BFloat16Test, RoundTripAndRounding) {
  for (uint32_t bits = 0; bits <= 0xffff; bits += 7) {
    const float f = BFloat16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBFloat16(f), bits);
  }
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16(Bits(0x3f808000)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(Bits(0x3f818000)), 0x3f82);  // tie -> even
  EXPECT_EQ(FloatToBFloat16(Bits(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(
      FloatToBFloat16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isinf(BFloat16ToFloat(
      FloatToBFloat16(std::numeric_limits<float>::infinity()))));
}

TEST(MakeTensorTest, EncodesEachDtype) {
  const std::vector<float> x = {1.0f, -2.5f, 0.375f, 3.0f, 0.0f, -0.0f};
  for (v1::DataType dtype : {v1::FLOAT32, v1::BFLOAT16, v1::FLOAT16}) {
    absl::StatusOr<v1::Tensor> t = MakeTensor(x, {2, 3}, dtype);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->dtype(), dtype);
    EXPECT_EQ(t->shape_size(), 2);
    EXPECT_EQ(static_cast<int64_t>(t->data().size()), 6 * DataTypeSize(dtype));
    absl::StatusOr<std::vector<float>> back = TensorToFloats(*t);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, x) << v1::DataType_Name(dtype);  // all exact in 16 bits
  }
}

TEST(MakeTensorTest, FloatBytesAreLittleEndian) {
  absl::StatusOr<v1::Tensor> t = MakeTensor({1.0f}, {1});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->data(), std::string("\x00\x00\x80\x3f", 4));
}

TEST(MakeTensorTest, Errors) {
  EXPECT_EQ(MakeTensor({1.0f, 2.0f}, {3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTensor({1.0f}, {1}, v1::BOOL).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTensor({}, {-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MakeBoolTensorTest, OneBytePerElement) {
  absl::StatusOr<v1::Tensor> t = MakeBoolTensor({0, 7, 1}, {3});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->dtype(), v1::BOOL);
  EXPECT_EQ(t->data(), std::string("\x00\x01\x01", 3));
  absl::StatusOr<std::vector<float>> back = TensorToFloats(*t);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, (std::vector<float>{0.0f, 1.0f, 1.0f}));
}

TEST(TensorToFloatsTest, RejectsWrongByteLengthAndDtype) {
  v1::Tensor t;
  t.add_shape(2);
  t.set_dtype(v1::FLOAT32);
  t.set_data(std::string(7, '\0'));
  absl::Status s = TensorToFloats(t).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("needs 8 bytes"), absl::string_view::npos) << s;
  t.set_dtype(v1::DATA_TYPE_UNSPECIFIED);
  EXPECT_EQ(TensorToFloats(t).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attn
