// Unit tests of client/array_io.h (.npy and JSON arrays).
#include "client/array_io.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace attn {
namespace {

TEST(NpyTest, RoundTrip) {
  const std::vector<float> x = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, 7.0f};
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{6}, std::vector<int64_t>{2, 3},
        std::vector<int64_t>{1, 2, 3}}) {
    const std::string bytes = SerializeNpy(shape, x);
    EXPECT_EQ(bytes.size() % 64, x.size() * 4 % 64);  // header 64-aligned
    absl::StatusOr<FloatArray> back = ParseNpy(bytes, "x.npy");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->shape, shape);
    EXPECT_EQ(back->values, x);
  }
}

TEST(NpyTest, HeaderIsNumpyV1) {
  const std::string bytes = SerializeNpy({2}, std::vector<float>{1, 2});
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_NE(bytes.find("'shape': (2,)"), std::string::npos);
  EXPECT_EQ(bytes[bytes.size() - 9], '\n');
}

TEST(NpyTest, ParsesNumpyWrittenHeader) {
  // As written by np.save(np.zeros((2, 1), np.float32)).
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1), }";
  header.append(128 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size());
  bytes += '\0';
  bytes += header;
  bytes.append(8, '\0');
  absl::StatusOr<FloatArray> a = ParseNpy(bytes, "z.npy");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 1}));
}

TEST(NpyTest, Rejects) {
  std::string good = SerializeNpy({2}, std::vector<float>{1, 2});
  EXPECT_FALSE(ParseNpy("not an npy", "a").ok());
  std::string f8 = good;
  f8.replace(f8.find("<f4"), 3, "<f8");
  absl::Status s = ParseNpy(f8, "b.npy").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("b.npy"), absl::string_view::npos);
  std::string fortran = good;
  fortran.replace(fortran.find("False"), 5, "True ");
  EXPECT_FALSE(ParseNpy(fortran, "c").ok());
  EXPECT_FALSE(ParseNpy(good.substr(0, good.size() - 1), "d").ok());
}

TEST(JsonArrayTest, ParsesNestedLists) {
  absl::StatusOr<FloatArray> a =
      ParseJsonArray("[[[1, 2.5], [3, -4]], [[5, 6], [7, 8e-1]]]", "q.json");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(a->values, (std::vector<float>{1, 2.5f, 3, -4, 5, 6, 7, 0.8f}));
}

TEST(JsonArrayTest, RejectsRaggedAndInvalid) {
  EXPECT_EQ(ParseJsonArray("[[1, 2], [3]]", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonArray("[[1, 2], 3]", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonArray("[[1, \"x\"]]", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJsonArray("[1, 2", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JsonArrayTest, RoundTripIsExact) {
  const std::vector<float> x = {0.1f, -1e-7f, 3.4028235e38f, 1.0f / 3.0f};
  const std::string text = SerializeJsonArray({2, 2}, x);
  absl::StatusOr<FloatArray> back = ParseJsonArray(text, "o.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(back->values, x);
}

TEST(ArrayFileTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadArrayFile("/nonexistent/a.npy").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace attn
