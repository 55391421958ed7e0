#include "server/models/safetensors.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/demo_model.h"
#include "tests/server/temp_dir.h"

namespace attn::server {
namespace {

using ::testing::HasSubstr;

constexpr char kSource[] = "bad.safetensors";

absl::StatusOr<SafetensorsFile> ParseHeader(const std::string& header,
                                            size_t data_size = 64) {
  return SafetensorsFile::Parse(
      SafetensorsFromHeader(header, std::string(data_size, '\0')), kSource);
}

// Asserts INVALID_ARGUMENT whose message names the file and every `needle`.
void ExpectInvalid(const absl::StatusOr<SafetensorsFile>& result,
                   const std::vector<std::string>& needles) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr(kSource));
  for (const std::string& n : needles) {
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(n));
  }
}

// Reference decoders written from the IEEE definitions, independent of the
// bit manipulation under test.
double ReferenceHalf(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  const double s = sign ? -1.0 : 1.0;
  if (exp == 0x1f) {
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : s * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return s * std::ldexp(mant, -24);
  return s * std::ldexp(1.0 + mant / 1024.0, exp - 15);
}

double ReferenceBFloat16(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 7) & 0xff, mant = h & 0x7f;
  const double s = sign ? -1.0 : 1.0;
  if (exp == 0xff) {
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : s * std::numeric_limits<double>::infinity();
  }
  if (exp == 0) return s * std::ldexp(mant, -133);
  return s * std::ldexp(1.0 + mant / 128.0, exp - 127);
}

TEST(HalfConversion, AllBitPatternsMatchReference) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const double want = ReferenceHalf(static_cast<uint16_t>(bits));
    const float got = HalfToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << bits;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << std::hex << bits;
      EXPECT_EQ(std::signbit(got), (bits & 0x8000) != 0) << std::hex << bits;
    }
  }
}

TEST(BFloat16Conversion, AllBitPatternsMatchReference) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const double want = ReferenceBFloat16(static_cast<uint16_t>(bits));
    const float got = BFloat16ToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << bits;
    } else {
      EXPECT_EQ(static_cast<double>(got), want) << std::hex << bits;
    }
  }
}

// The encoder picks the nearest representable value, ties to even mantissa.
template <typename Decode, typename Encode>
void ExpectNearest(float x, Decode decode, Encode encode) {
  const uint16_t h = encode(x);
  const double got = decode(h);
  const double err = std::fabs(got - x);
  for (int delta : {-1, 1}) {
    const auto neighbour = static_cast<uint16_t>(h + delta);
    // Stay within the same sign and away from inf/NaN patterns.
    if ((neighbour & 0x8000) != (h & 0x8000)) continue;
    const double other = decode(neighbour);
    if (std::isnan(other) || std::isinf(other)) continue;
    const double other_err = std::fabs(other - x);
    EXPECT_LE(err, other_err) << x;
    if (err == other_err) {
      EXPECT_EQ(h & 1, 0) << "tie not to even: " << x;
    }
  }
}

TEST(FloatToHalf, RoundsToNearestEven) {
  DeterministicRng rng(7);
  std::vector<float> values = {0.0f,    -0.0f,         1.0f,          -2.5f,
                               65504.f, 65519.f,       6.1e-5f,       5.96e-8f,
                               1e-8f,   3.0517578e-5f, 1.00048828125f};
  for (int i = 0; i < 20000; ++i) {
    // Magnitudes from 2^-26 to 2^15 (no overflow to inf).
    values.push_back(rng.Uniform() * std::ldexp(1.0f, (i % 42) - 26));
  }
  for (float x : values) ExpectNearest(x, ReferenceHalf, FloatToHalf);
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(65520.0f))));
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(1e10f))));
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_EQ(HalfToFloat(FloatToHalf(-std::numeric_limits<float>::infinity())),
            -std::numeric_limits<float>::infinity());
}

TEST(FloatToBFloat16, RoundsToNearestEven) {
  DeterministicRng rng(8);
  for (int i = 0; i < 20000; ++i) {
    const float x = rng.Uniform() * std::ldexp(1.0f, (i % 80) - 40);
    ExpectNearest(x, ReferenceBFloat16, FloatToBFloat16);
  }
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
}

TEST(Safetensors, RoundTripsAllFloatDTypes) {
  DeterministicRng rng(1);
  std::vector<float> values(24);
  for (float& v : values) v = rng.Uniform();
  for (SafetensorsDType dtype :
       {SafetensorsDType::kF32, SafetensorsDType::kBF16,
        SafetensorsDType::kF16}) {
    const std::string bytes =
        SerializeSafetensors({{"a.weight",
                               SafetensorsDTypeName(dtype),
                               {4, 6},
                               EncodeFloats(values, dtype)},
                              {"b", "I32", {2}, std::string(8, '\x01')}},
                             {{"format", "pt"}});
    absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Parse(bytes, "mem");
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ(file->tensors().size(), 2u);
    EXPECT_EQ(file->metadata().at("format"), "pt");
    const SafetensorsTensorInfo* info = file->Find("a.weight");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, dtype);
    EXPECT_EQ(info->shape, (std::vector<int64_t>{4, 6}));
    EXPECT_EQ(info->num_elements, 24);
    absl::StatusOr<std::vector<float>> got = file->ReadAsFloat32("a.weight");
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), values.size());
    // Relative rounding error of each format (values are normal numbers).
    const double tol = dtype == SafetensorsDType::kF32    ? 0.0
                       : dtype == SafetensorsDType::kBF16 ? std::ldexp(1, -8)
                                                          : std::ldexp(1, -11);
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_LE(std::fabs((*got)[i] - values[i]),
                tol * std::fabs(values[i]) + 1e-30)
          << SafetensorsDTypeName(dtype) << " " << i;
    }
    absl::StatusOr<std::vector<float>> ints = file->ReadAsFloat32("b");
    EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ints.status().message()), HasSubstr("'b'"));
    EXPECT_EQ(file->ReadAsFloat32("missing").status().code(),
              absl::StatusCode::kNotFound);
  }
}

TEST(Safetensors, ReadsFileFromDisk) {
  testing::TempDir dir;
  const std::string path = dir.Join("m.safetensors");
  const std::vector<float> values = {1.0f, -2.0f, 0.5f};
  ASSERT_TRUE(WriteFileBytes(
                  path, SerializeSafetensors(
                            {{"x",
                              "F32",
                              {3},
                              EncodeFloats(values, SafetensorsDType::kF32)}}))
                  .ok());
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::ReadFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->source(), path);
  EXPECT_EQ(*file->ReadAsFloat32("x"), values);

  absl::StatusOr<SafetensorsFile> missing =
      SafetensorsFile::ReadFile(dir.Join("nope.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("nope.safetensors"));

  absl::StatusOr<SafetensorsFile> directory =
      SafetensorsFile::ReadFile(dir.path());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.status().message()),
              HasSubstr("not a regular file"));
}

TEST(Safetensors, AcceptsGapsScalarsAndEmptyTensors) {
  // Unused bytes between tensors, a scalar and two empty tensors at the same
  // offset are all valid.
  absl::StatusOr<SafetensorsFile> file = ParseHeader(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "s": {"dtype": "F32", "shape": [], "data_offsets": [16, 20]},
          "e1": {"dtype": "F16", "shape": [0, 3], "data_offsets": [8, 8]},
          "e2": {"dtype": "F16", "shape": [0], "data_offsets": [8, 8]}})",
      24);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->Find("s")->num_elements, 1);
  EXPECT_EQ(file->Find("e1")->num_elements, 0);
  EXPECT_TRUE(file->ReadAsFloat32("e1")->empty());
}

TEST(SafetensorsMalformed, FileShorterThanLengthPrefix) {
  ExpectInvalid(SafetensorsFile::Parse("abc", kSource), {"8-byte"});
}

TEST(SafetensorsMalformed, HeaderLengthAboveLimit) {
  std::string bytes(16, '\0');
  bytes[5] = 0x10;  // 2^44
  ExpectInvalid(SafetensorsFile::Parse(bytes, kSource), {"header length"});
}

TEST(SafetensorsMalformed, HeaderLengthBeyondFile) {
  const std::string full = SafetensorsFromHeader(
      R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
      std::string(4, '\0'));
  // Cut inside the header.
  ExpectInvalid(SafetensorsFile::Parse(full.substr(0, 20), kSource),
                {"header length", "truncated"});
}

TEST(SafetensorsMalformed, TruncatedData) {
  const std::string full = SafetensorsFromHeader(
      R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
      std::string(16, '\0'));
  ExpectInvalid(
      SafetensorsFile::Parse(full.substr(0, full.size() - 1), kSource),
      {"'w'", "out of range", "15 bytes"});
}

TEST(SafetensorsMalformed, NotJson) {
  ExpectInvalid(ParseHeader("{\"w\": [1, 2"), {"not valid JSON"});
  ExpectInvalid(ParseHeader(""), {"not valid JSON"});
}

TEST(SafetensorsMalformed, NotAnObject) {
  ExpectInvalid(ParseHeader("[1, 2, 3]"), {"must be a JSON object"});
  ExpectInvalid(ParseHeader(R"({"w": 5})"), {"'w'", "entry must be"});
}

TEST(SafetensorsMalformed, DeepNesting) {
  // Deep values must be rejected without recursing (stack overflow).
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ExpectInvalid(ParseHeader("{\"w\": " + deep + "}"), {"nests deeper"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [[1]],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "shape[0] must be an integer, got [1]"});
}

TEST(SafetensorsMalformed, DuplicateKey) {
  ExpectInvalid(
      ParseHeader(
          R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                      "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})"),
      {"'w' twice"});
}

TEST(SafetensorsMalformed, MissingField) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1]}})"),
                {"'w'", "missing field 'data_offsets'"});
  ExpectInvalid(ParseHeader(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})"),
                {"'w'", "missing field 'dtype'"});
}

TEST(SafetensorsMalformed, UnknownField) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1],
                            "data_offsets": [0, 4], "stride": [1]}})"),
                {"'w'", "unknown field 'stride'"});
}

TEST(SafetensorsMalformed, UnknownDType) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F8", "shape": [1],
                                      "data_offsets": [0, 1]}})"),
                {"'w'", "unknown dtype \"F8\""});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": 4, "shape": [1],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "dtype must be a string"});
}

TEST(SafetensorsMalformed, NegativeOrNonIntegerDim) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [2, -1],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "shape[1] = -1 is negative"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1.5],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "shape[0] must be an integer"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": 3,
                                      "data_offsets": [0, 12]}})"),
                {"'w'", "shape must be an array"});
}

TEST(SafetensorsMalformed, OffsetsOutOfRange) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [4],
                                      "data_offsets": [60, 76]}})",
                            64),
                {"'w'", "out of range", "64 bytes"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1],
                                      "data_offsets": [8, 4]}})"),
                {"'w'", "begin is after end"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1],
                                      "data_offsets": [-4, 0]}})"),
                {"'w'", "data_offsets must be"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32", "shape": [1],
                                      "data_offsets": [0]}})"),
                {"'w'", "data_offsets must be"});
}

TEST(SafetensorsMalformed, Overlap) {
  ExpectInvalid(
      ParseHeader(
          R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})"),
      {"'b'", "overlaps", "'a'"});
}

TEST(SafetensorsMalformed, SizeMismatch) {
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "BF16", "shape": [2, 3],
                                      "data_offsets": [0, 24]}})"),
                {"'w'", "span 24 bytes", "need 12 bytes"});
}

TEST(SafetensorsMalformed, Overflow) {
  // 2^32 * 2^32 elements.
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32",
                                      "shape": [4294967296, 4294967296],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "overflows"});
  // 2^61 elements of 4 bytes: the element count fits, the byte size does not.
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32",
                                      "shape": [2305843009213693952],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "overflows"});
  ExpectInvalid(ParseHeader(R"({"w": {"dtype": "F32",
                                      "shape": [18446744073709551615],
                                      "data_offsets": [0, 4]}})"),
                {"'w'", "too large"});
}

TEST(SafetensorsMalformed, BadMetadata) {
  ExpectInvalid(ParseHeader(R"({"__metadata__": {"format": 1}})"),
                {"__metadata__ 'format' must be a string"});
  ExpectInvalid(ParseHeader(R"({"__metadata__": [1]})"),
                {"__metadata__ must be an object"});
}

}  // namespace
}  // namespace attn::server
