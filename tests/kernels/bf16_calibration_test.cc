// The per-CPU choice of the bf16 core (bf16_calibration.h): how measured
// ratios become a key-length threshold, that the measurement is cached per
// head shape, that a default bf16 layer on an AVX512-BF16 CPU reports the
// calibrated split, and that a split core computes every sequence exactly
// as the core its length selects (bit for bit: the fp32 unit below the
// threshold, vdpbf16ps from it; each of those is checked against a naive
// reference in flash_paths_test).
#include "kernels/internal/bf16_calibration.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/internal/flash_core.h"
#include "kernels/kernel_isa.h"

namespace attn::kernels::testing {
namespace {

using internal::Bf16MinKeysFrom;
using internal::CoreChoice;
using internal::CoreIsa;
using internal::FlashCore;
using internal::FlashSequence;
using internal::kBf16Never;
using ::testing::HasSubstr;

bool Runs(const std::string& isa) {
  for (const std::string& s : SupportedKernelIsas()) {
    if (s == isa) return true;
  }
  return false;
}

TEST(Bf16CalibrationTest, ThresholdIsWhereVdpbf16psWinsFromOn) {
  EXPECT_EQ(Bf16MinKeysFrom({}), kBf16Never);
  EXPECT_EQ(Bf16MinKeysFrom({{16, 1.3}, {32, 1.1}, {64, 0.9}, {128, 0.7}}), 64);
  // Winning everywhere measured: every sequence.
  EXPECT_EQ(Bf16MinKeysFrom({{16, 0.9}, {32, 0.8}}), 0);
  // A win followed by a loss is no threshold; the last run of wins counts.
  EXPECT_EQ(Bf16MinKeysFrom({{16, 0.9}, {32, 1.1}, {64, 0.8}, {128, 0.7}}), 64);
  EXPECT_EQ(Bf16MinKeysFrom({{16, 1.2}, {32, 0.9}, {64, 1.05}}), kBf16Never);
  EXPECT_EQ(Bf16MinKeysFrom({{16, 1.0}}), kBf16Never);  // a tie is no win
}

TEST(Bf16CalibrationTest, MeasuredOncePerShapeAndConsistent) {
  if (!Runs("avx512_bf16")) {
    GTEST_SKIP() << "no AVX512-BF16 on this CPU: nothing to calibrate";
  }
  const internal::Bf16Calibration a = internal::CalibrateBf16(4, 2, 64);
  ASSERT_FALSE(a.ratios.empty());
  int64_t previous = 0;
  for (const auto& [len, ratio] : a.ratios) {
    EXPECT_GT(len, previous);
    previous = len;
    EXPECT_TRUE(std::isfinite(ratio) && ratio > 0) << len << ": " << ratio;
  }
  EXPECT_EQ(a.min_keys, Bf16MinKeysFrom(a.ratios));
  EXPECT_GT(a.millis, 0);
  EXPECT_THAT(a.Summary(), HasSubstr("vdpbf16ps/fp32 time"));
  // Cached: the same measurement, not a new one.
  const internal::Bf16Calibration b = internal::CalibrateBf16(4, 2, 64);
  EXPECT_EQ(b.millis, a.millis);
  EXPECT_EQ(b.ratios, a.ratios);
}

TEST(Bf16CalibrationTest, DefaultBf16LayerReportsItsCore) {
  unsetenv("ATTN_KERNEL_ISA");
  // head_dim 48: AMX (head_dim % 32 == 0) does not take it either.
  const FlashCore core(4, 4, 48, ComputeDType::kBFloat16);
  const FlashCore fp32(4, 4, 48, ComputeDType::kFloat32);
  EXPECT_THAT(fp32.description(), ::testing::Not(HasSubstr("calibrated")));
  if (!Runs("avx512_bf16")) {
    EXPECT_NE(std::string(core.isa()), "avx512_bf16");
    EXPECT_EQ(core.description(), core.isa());
    return;
  }
  EXPECT_THAT(core.description(), HasSubstr("calibrated"));
  EXPECT_FALSE(core.choice().calibrate);
  const internal::Bf16Calibration c = internal::CalibrateBf16(4, 4, 48);
  if (c.min_keys == kBf16Never) {
    EXPECT_EQ(std::string(core.isa()), "avx512");
  } else {
    EXPECT_EQ(std::string(core.isa()), "avx512_bf16");
    EXPECT_EQ(core.choice().bf16_min_keys, c.min_keys);
  }
}

struct Seqs {
  std::vector<std::vector<float>> q, k, v, ctx;
  std::vector<std::vector<uint8_t>> masked;
  std::vector<FlashSequence> s;
};

// One sequence per length; heads 4, kv heads 2, head_dim 40; the odd ones
// causal.
Seqs Make(const std::vector<int64_t>& lens) {
  constexpr int64_t kH = 4, kKv = 2, kHd = 40;
  Seqs x;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t i = 0; i < lens.size(); ++i) {
    const int64_t n = lens[i];
    x.q.emplace_back(n * kH * kHd);
    x.k.emplace_back(n * kKv * kHd);
    x.v.emplace_back(n * kKv * kHd);
    x.ctx.emplace_back(n * kH * kHd, -1.0f);
    x.masked.emplace_back(n, 2);
    for (float& f : x.q.back()) f = u(rng) * 0.3f;
    for (float& f : x.k.back()) f = u(rng);
    for (float& f : x.v.back()) f = u(rng);
  }
  for (size_t i = 0; i < lens.size(); ++i) {
    FlashSequence s;
    s.q = x.q[i].data();
    s.k = x.k[i].data();
    s.v = x.v[i].data();
    s.q_stride = kH * kHd;
    s.kv_stride = kKv * kHd;
    s.context = x.ctx[i].data();
    s.q_len = s.kv_len = s.key_limit = lens[i];
    s.causal = i % 2 == 1;
    s.row_masked = x.masked[i].data();
    x.s.push_back(s);
  }
  return x;
}

TEST(Bf16CalibrationTest, SplitCoreRunsEachSequenceOnItsUnit) {
  if (!Runs("avx512_bf16")) {
    GTEST_SKIP() << "no AVX512-BF16 on this CPU: no split core";
  }
  const std::vector<int64_t> lens = {5, 63, 64, 65, 16, 200, 1, 130};
  constexpr int64_t kMinKeys = 64;
  CoreChoice split;
  split.isa = CoreIsa::kAvx512Bf16;
  split.name = "avx512_bf16";
  split.bf16_min_keys = kMinKeys;
  CoreChoice vdp = split;
  vdp.bf16_min_keys = 0;
  CoreChoice f32;
  f32.isa = CoreIsa::kAvx512;
  f32.name = "avx512";
  const auto bf16 = ComputeDType::kBFloat16;
  Seqs a = Make(lens), b = Make(lens), c = Make(lens);
  ASSERT_TRUE(FlashCore(4, 2, 40, bf16, split).Forward(a.s).ok());
  ASSERT_TRUE(FlashCore(4, 2, 40, bf16, vdp).Forward(b.s).ok());
  ASSERT_TRUE(FlashCore(4, 2, 40, bf16, f32).Forward(c.s).ok());
  for (size_t i = 0; i < lens.size(); ++i) {
    const Seqs& want = lens[i] >= kMinKeys ? b : c;
    const Seqs& other = lens[i] >= kMinKeys ? c : b;
    EXPECT_EQ(a.ctx[i], want.ctx[i]) << "length " << lens[i];
    EXPECT_EQ(a.masked[i], want.masked[i]) << "length " << lens[i];
    // The two units differ (bf16 rounding), so the comparison above tells
    // which one ran.
    EXPECT_NE(a.ctx[i], other.ctx[i]) << "length " << lens[i];
  }
}

}  // namespace
}  // namespace attn::kernels::testing
