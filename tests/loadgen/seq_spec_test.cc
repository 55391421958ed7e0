// SeqSpec parsing ("16", "8:512", "16:0.7,128:0.3") and sampling
// proportions.
#include "client/loadgen/seq_spec.h"

#include <cmath>
#include <map>
#include <random>

#include "gtest/gtest.h"

namespace attn::loadgen {
namespace {

TEST(SeqSpecTest, Fixed) {
  auto spec = SeqSpec::Parse("16");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::mt19937_64 rng(1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(spec->Sample(rng), 16);
  EXPECT_EQ(spec->Support(), std::vector<int64_t>{16});
  EXPECT_EQ(spec->Mean(), 16);
}

TEST(SeqSpecTest, UniformRangeCoversBothEndsEvenly) {
  auto spec = SeqSpec::Parse("8:512");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->Support().size(), 505u);
  EXPECT_EQ(spec->Max(), 512);
  std::mt19937_64 rng(2);
  constexpr int kN = 200'000;
  double sum = 0;
  int low_half = 0;
  std::map<int64_t, int> seen;
  for (int i = 0; i < kN; ++i) {
    const int64_t v = spec->Sample(rng);
    ASSERT_GE(v, 8);
    ASSERT_LE(v, 512);
    sum += static_cast<double>(v);
    if (v <= 259) ++low_half;  // 8..259 is half of the 504 + 1 values
    ++seen[v];
  }
  EXPECT_NEAR(sum / kN, 260.0, 2.0);
  EXPECT_NEAR(static_cast<double>(low_half) / kN, 252.0 / 505, 0.01);
  EXPECT_GT(seen[8], 0);
  EXPECT_GT(seen[512], 0);
}

TEST(SeqSpecTest, WeightedListProportions) {
  auto spec = SeqSpec::Parse("16:0.7,128:0.3");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->Support(), (std::vector<int64_t>{16, 128}));
  EXPECT_NEAR(spec->Mean(), 0.7 * 16 + 0.3 * 128, 1e-9);
  std::mt19937_64 rng(3);
  constexpr int kN = 100'000;
  int n16 = 0, n128 = 0;
  for (int i = 0; i < kN; ++i) {
    const int64_t v = spec->Sample(rng);
    if (v == 16) ++n16;
    if (v == 128) ++n128;
  }
  EXPECT_EQ(n16 + n128, kN);
  // 5 standard deviations of a binomial(100000, 0.7) share: 0.0072.
  EXPECT_NEAR(static_cast<double>(n16) / kN, 0.7, 0.0075);
}

TEST(SeqSpecTest, RelativeWeightsAreNormalized) {
  auto spec = SeqSpec::Parse("32:1.0,64:3.0");
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::mt19937_64 rng(4);
  int n64 = 0;
  for (int i = 0; i < 40'000; ++i) n64 += spec->Sample(rng) == 64;
  EXPECT_NEAR(n64 / 40'000.0, 0.75, 0.011);
}

TEST(SeqSpecTest, RejectsMalformedSpecsWithTheBadPart) {
  for (const char* bad : {"", "0", "-3", "abc", "512:8", "16:0.7,128",
                          "16:0.7,128:-1", "16:0.7,x:0.3", "16:0.7,,"}) {
    auto spec = SeqSpec::Parse(bad);
    EXPECT_FALSE(spec.ok()) << bad;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(spec.status().message().find("--seq"), absl::string_view::npos);
  }
}

}  // namespace
}  // namespace attn::loadgen
