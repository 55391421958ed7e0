// The flash core alone (no oneDNN: Q, K and V are given, not projected) on
// every path this CPU runs (SupportedKernelIsas: scalar, each Highway
// target, the AVX-512/AMX units where present), against a naive fp64
// softmax(Q.K^T + mask).V written here: causal, key limits, additive and
// boolean masks, fully masked rows, GQA, head widths that are not a
// multiple of the vector width, ragged sequences in one call and sequences
// long enough for the packed-K/V path. This is also what the aarch64 CI
// stage runs under qemu (scripts/ci/aarch64.sh).
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/internal/flash_core.h"
#include "kernels/kernel_isa.h"

namespace attn::kernels::testing {
namespace {

using internal::FlashCore;
using internal::FlashSequence;

struct Shape {
  std::string name;
  int64_t heads, kv_heads, hd;
  std::vector<int64_t> q_lens;  // one sequence each; kv_len = q_len + extra
  int64_t extra_keys = 0;
  bool causal = false;
  bool limit_keys = false;  // key_limit = kv_len * 2 / 3 (one: 0)
  MaskKind mask = MaskKind::kNone;
};

struct Seq {
  std::vector<float> q, k, v, mask, ctx;
  std::vector<uint8_t> bool_mask, row_masked;
  FlashSequence s;
};

// Naive fp64 context of one sequence: [q_len, H * hd].
std::vector<double> Reference(const Shape& sh, const Seq& x) {
  const FlashSequence& s = x.s;
  const int64_t group = sh.heads / sh.kv_heads;
  std::vector<double> out(s.q_len * sh.heads * sh.hd, 0.0);
  for (int64_t h = 0; h < sh.heads; ++h) {
    const int64_t g = h / group;
    for (int64_t i = 0; i < s.q_len; ++i) {
      std::vector<double> w(s.kv_len, -std::numeric_limits<double>::infinity());
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < s.kv_len; ++j) {
        if (j >= s.key_limit) continue;
        if (s.causal && j > i + (s.kv_len - s.q_len)) continue;
        if (sh.mask == MaskKind::kBoolean && x.bool_mask[i * s.kv_len + j]) {
          continue;
        }
        double dot = 0;
        for (int64_t d = 0; d < sh.hd; ++d) {
          dot += double(s.q[i * s.q_stride + h * sh.hd + d]) *
                 s.k[j * s.kv_stride + g * sh.hd + d];
        }
        if (sh.mask == MaskKind::kAdditive) dot += x.mask[i * s.kv_len + j];
        w[j] = dot;
        mx = std::max(mx, dot);
      }
      if (mx == -std::numeric_limits<double>::infinity()) continue;  // zeros
      double sum = 0;
      for (double& e : w) sum += (e = std::exp(e - mx));
      for (int64_t j = 0; j < s.kv_len; ++j) {
        for (int64_t d = 0; d < sh.hd; ++d) {
          out[i * sh.heads * sh.hd + h * sh.hd + d] +=
              w[j] / sum * s.v[j * s.kv_stride + g * sh.hd + d];
        }
      }
    }
  }
  return out;
}

std::vector<Seq> MakeSeqs(const Shape& sh, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<Seq> seqs(sh.q_lens.size());
  for (size_t si = 0; si < seqs.size(); ++si) {
    Seq& x = seqs[si];
    const int64_t q_len = sh.q_lens[si];
    const int64_t kv_len = q_len + sh.extra_keys;
    const int64_t qw = sh.heads * sh.hd, kvw = sh.kv_heads * sh.hd;
    auto fill = [&](std::vector<float>& a, size_t size, float scale) {
      a.resize(size);
      for (float& f : a) f = n(rng) * scale;
    };
    fill(x.q, q_len * qw, 1.0f / std::sqrt(float(sh.hd)));
    fill(x.k, kv_len * kvw, 1.0f);
    fill(x.v, kv_len * kvw, 1.0f);
    x.ctx.assign(q_len * qw, std::nanf(""));
    x.row_masked.assign(q_len, 7);
    FlashSequence& s = x.s;
    s.q = x.q.data();
    s.k = x.k.data();
    s.v = x.v.data();
    s.q_stride = qw;
    s.kv_stride = kvw;
    s.context = x.ctx.data();
    s.q_len = q_len;
    s.kv_len = kv_len;
    s.key_limit = !sh.limit_keys ? kv_len : (si == 0 ? 0 : kv_len * 2 / 3);
    s.causal = sh.causal;
    s.mask_kind = sh.mask;
    s.row_masked = x.row_masked.data();
    if (sh.mask == MaskKind::kAdditive) {
      fill(x.mask, q_len * kv_len, 1.0f);
      // Row 1 fully masked with -inf.
      for (int64_t j = 0; j < kv_len && q_len > 1; ++j) {
        x.mask[kv_len + j] = -std::numeric_limits<float>::infinity();
      }
      s.mask = x.mask.data();
    } else if (sh.mask == MaskKind::kBoolean) {
      x.bool_mask.resize(q_len * kv_len);
      for (auto& b : x.bool_mask) b = rng() % 4 == 0;
      for (int64_t j = 0; j < kv_len; ++j) x.bool_mask[j] = 1;  // row 0
      s.mask = x.bool_mask.data();
    }
  }
  return seqs;
}

std::vector<Shape> Shapes() {
  return {
      {"Hd64Causal", 2, 2, 64, {200}, 0, true},
      {"Hd24GqaCross", 4, 2, 24, {33, 70}, 19},
      {"Hd13RaggedKeyLimits", 3, 1, 13, {5, 64, 1, 97}, 3, false, true},
      {"Hd32Additive", 2, 2, 32, {70, 9}, 0, true, false, MaskKind::kAdditive},
      {"Hd40Boolean", 2, 1, 40, {66}, 5, false, false, MaskKind::kBoolean},
      {"Hd16LongPacked", 1, 1, 16, {1100}, 0, true},
  };
}

class FlashPathTest
    : public ::testing::TestWithParam<std::tuple<Shape, std::string>> {};

TEST_P(FlashPathTest, MatchesNaiveReference) {
  const Shape& sh = std::get<0>(GetParam());
  const std::string& isa = std::get<1>(GetParam());
  for (ComputeDType dtype : {ComputeDType::kFloat32, ComputeDType::kBFloat16}) {
    ASSERT_EQ(setenv("ATTN_KERNEL_ISA", isa.c_str(), 1), 0);
    const FlashCore core(sh.heads, sh.kv_heads, sh.hd, dtype);
    unsetenv("ATTN_KERNEL_ISA");
    const bool bf16_core = std::string(core.isa()) == "amx_bf16" ||
                           std::string(core.isa()) == "avx512_bf16";
    if (!bf16_core) {
      // bf16-only paths serve fp32 layers with the AVX-512 unit.
      EXPECT_TRUE(core.isa() == isa || std::string(core.isa()) == "avx512")
          << core.isa() << " for " << isa;
    }
    std::vector<Seq> seqs = MakeSeqs(sh, 11);
    std::vector<FlashSequence> fs;
    for (const Seq& x : seqs) fs.push_back(x.s);
    ASSERT_TRUE(core.Forward(fs).ok());
    const double tol = bf16_core ? 3e-2 : 2e-5;
    for (size_t si = 0; si < seqs.size(); ++si) {
      const std::vector<double> ref = Reference(sh, seqs[si]);
      double worst = 0;
      for (size_t e = 0; e < ref.size(); ++e) {
        const double err = std::abs(seqs[si].ctx[e] - ref[e]);
        ASSERT_TRUE(std::isfinite(seqs[si].ctx[e])) << isa << " seq " << si;
        worst = std::max(worst, err / (1 + std::abs(ref[e])));
      }
      EXPECT_LE(worst, tol) << isa << " " << core.isa() << " seq " << si;
      const FlashSequence& s = seqs[si].s;
      for (int64_t i = 0; i < s.q_len; ++i) {
        bool any = false;
        for (int64_t d = 0; d < sh.heads * sh.hd; ++d) {
          any = any || ref[i * sh.heads * sh.hd + d] != 0.0;
        }
        // A row with no visible key: flagged, context exactly zero.
        EXPECT_EQ(seqs[si].row_masked[i], any ? 0 : 1) << "row " << i;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, FlashPathTest,
    ::testing::Combine(::testing::ValuesIn(Shapes()),
                       ::testing::ValuesIn(SupportedKernelIsas())),
    [](const ::testing::TestParamInfo<FlashPathTest::ParamType>& info) {
      return std::get<0>(info.param).name + "_" + std::get<1>(info.param);
    });

}  // namespace
}  // namespace attn::kernels::testing
