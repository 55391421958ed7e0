// MultiHeadAttention::ForwardPaged against the same layer's Forward (and
// that against the naive reference), with and without rotary embeddings
// and sliding windows: a
// prefill and single-token steps over a pool whose blocks are scattered
// (and shared with a second sequence in the same calls) give the last rows
// of one causal self-attention over the whole prefix.
#include <omp.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "kernels/kernel_isa.h"
#include "kernels/paged_attention.h"
#include "tests/kernels/reference_attention.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels {
namespace {

struct PagedCase {
  int64_t heads;
  int64_t kv_heads;
  bool bf16;
  // Rotary embedding and sliding window of the layer (0: none).
  double rope_theta = 0.0;
  AttentionConfig::RopeStyle rope_style = AttentionConfig::RopeStyle::kHalf;
  int64_t rope_dims = 0;
  int64_t window = 0;
};

class PagedDecodeTest : public ::testing::TestWithParam<PagedCase> {};

std::vector<float> CausalForward(const MultiHeadAttention& mha, const float* x,
                                 int64_t len) {
  const int64_t d = mha.config().d_model;
  std::vector<float> out(static_cast<size_t>(len * d));
  AttentionInput in;
  in.q_len = in.kv_len = len;
  in.query = in.key = in.value = x;
  in.causal = true;
  AttentionOutput o;
  o.output = out.data();
  EXPECT_TRUE(mha.Forward(in, o).ok());
  return out;
}

// A zeroed pool of `blocks` blocks that owns its memory.
class TestPool {
 public:
  TestPool(int block_tokens, int64_t kv_heads, int64_t head_dim, bool bf16,
           int64_t blocks) {
    KvPoolLayout layout;
    layout.block_tokens = block_tokens;
    layout.num_kv_heads = static_cast<int>(kv_heads);
    layout.head_dim = static_cast<int>(head_dim);
    layout.dtype =
        bf16 ? KvPoolLayout::Dtype::kBf16 : KvPoolLayout::Dtype::kF32;
    k_.resize(static_cast<size_t>(blocks * layout.block_elements() *
                                  layout.element_bytes()));
    v_.resize(k_.size());
    pool_ = KvPool{layout, k_.data(), v_.data(), blocks};
  }
  TestPool(const TestPool&) = delete;
  TestPool& operator=(const TestPool&) = delete;
  const KvPool& pool() const { return pool_; }

 private:
  std::vector<uint8_t> k_, v_;
  KvPool pool_;
};

TEST_P(PagedDecodeTest, StepsMatchCausalForwardOverThePrefix) {
  const PagedCase& p = GetParam();
  AttentionConfig config;
  config.d_model = 64;
  config.num_heads = p.heads;
  config.num_kv_heads = p.kv_heads;
  config.rope_theta = p.rope_theta;
  config.rope_style = p.rope_style;
  config.rope_dims = p.rope_dims;
  config.sliding_window = p.window;
  std::mt19937 rng(5);
  const AttentionWeights weights =
      testing::RandomWeights(rng, config, /*with_bias=*/true);
  auto mha = MultiHeadAttention::Create(config, weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  const AttentionConfig& c = (*mha)->config();
  constexpr int64_t kBlocks = 24, kPrefill = 9, kTotal = 17;
  const TestPool storage(4, c.num_kv_heads, c.head_dim, p.bf16, kBlocks);
  const KvPool& pool = storage.pool();
  // Two sequences, blocks interleaved and out of order.
  std::vector<int32_t> ids(kBlocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const std::vector<int32_t> table_a(ids.begin(), ids.begin() + 12);
  const std::vector<int32_t> table_b(ids.begin() + 12, ids.end());
  const int64_t d = c.d_model;
  const std::vector<float> xa = testing::RandomVector(rng, kTotal * d, 1.0);
  const std::vector<float> xb = testing::RandomVector(rng, kTotal * d, 1.0);
  const std::vector<float> ref_a = CausalForward(**mha, xa.data(), kTotal);
  const std::vector<float> ref_b = CausalForward(**mha, xb.data(), kTotal);
  const double tol = p.bf16 ? 3e-2 : 1e-4;
  // The stateless answers themselves match the naive double reference
  // (rotary positions 0 .. kTotal - 1, causal, window).
  for (const std::vector<float>* x : {&xa, &xb}) {
    AttentionInput in;
    in.q_len = in.kv_len = kTotal;
    in.query = in.key = in.value = x->data();
    in.causal = true;
    const std::vector<double> want =
        reference::ReferenceAttention(c, weights, in).output;
    const std::vector<float>& got = x == &xa ? ref_a : ref_b;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-4) << "element " << i;
    }
  }
  // Prefill a alone, then b's prefill together with a's steps, then steps.
  int64_t pos_a = 0, pos_b = 0;
  for (int call = 0; pos_a < kTotal || pos_b < kTotal; ++call) {
    std::vector<PagedSequence> seqs;
    std::vector<float> x;
    auto add = [&](const std::vector<int32_t>& table,
                   const std::vector<float>& src, int64_t pos, int64_t n) {
      seqs.push_back(
          {pos, n, table.data(), static_cast<int64_t>(table.size())});
      x.insert(x.end(), src.begin() + pos * d, src.begin() + (pos + n) * d);
    };
    const int64_t na = pos_a == 0 ? kPrefill : (pos_a < kTotal ? 1 : 0);
    const int64_t nb =
        call == 0 ? 0 : (pos_b == 0 ? kPrefill : (pos_b < kTotal ? 1 : 0));
    if (na > 0) add(table_a, xa, pos_a, na);
    if (nb > 0) add(table_b, xb, pos_b, nb);
    std::vector<float> out(x.size());
    ASSERT_TRUE((*mha)->ForwardPaged(x.data(), seqs, pool, out.data()).ok());
    int64_t row = 0;
    for (const PagedSequence& s : seqs) {
      const std::vector<float>& ref =
          s.block_table == table_a.data() ? ref_a : ref_b;
      for (int64_t i = 0; i < s.new_tokens * d; ++i) {
        ASSERT_NEAR(out[row * d + i], ref[s.start_position * d + i], tol)
            << "call " << call << " position " << s.start_position + i / d;
      }
      row += s.new_tokens;
    }
    pos_a += na;
    pos_b += nb;
  }
}

// A long sequence on few kv heads: with 4 threads each (token, kv head)
// pair's keys are split into spans on different threads and merged
// (kMinSpanKeys), in chunks of blocks (DecodeChunkBlocks: 705 keys are
// three), with head_dim 20 (not a multiple of the vector length: scalar
// tails) or 32 (a multiple of twice every target's: the paired bf16 P.V
// tiles) and every kernel path this CPU runs (the Highway span of each
// target, the scalar span). Each must match the layer's stateless causal
// Forward over the whole prefix.
struct LongCase {
  std::string isa;
  bool bf16;
  int64_t window;
  int64_t head_dim = 20;
};

void PrintTo(const LongCase& c, std::ostream* os) {
  *os << c.isa << (c.bf16 ? " bf16 cache" : " fp32 cache") << " window "
      << c.window << " head_dim " << c.head_dim;
}

class PagedDecodeLongTest : public ::testing::TestWithParam<LongCase> {};

TEST_P(PagedDecodeLongTest, SplitSpansMatchCausalForward) {
  const LongCase& p = GetParam();
  AttentionConfig config;
  config.d_model = 4 * p.head_dim;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.rope_theta = 10000.0;
  config.sliding_window = p.window;
  std::mt19937 rng(11);
  const AttentionWeights weights =
      testing::RandomWeights(rng, config, /*with_bias=*/true);
  ASSERT_EQ(setenv("ATTN_KERNEL_ISA", p.isa.c_str(), 1), 0);
  auto mha = MultiHeadAttention::Create(config, weights);
  unsetenv("ATTN_KERNEL_ISA");
  ASSERT_TRUE(mha.ok()) << mha.status();
  constexpr int64_t kPrefill = 700, kTotal = 705, kBlocks = 50;
  const TestPool storage(16, 2, p.head_dim, p.bf16, kBlocks);
  const KvPool& pool = storage.pool();
  std::vector<int32_t> table(kBlocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  const int64_t d = config.d_model;
  const std::vector<float> x = testing::RandomVector(rng, kTotal * d, 1.0);
  const std::vector<float> ref = CausalForward(**mha, x.data(), kTotal);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(4);
  const double tol = p.bf16 ? 3e-2 : 1e-4;
  for (int64_t pos = 0; pos < kTotal;) {
    const int64_t n = pos == 0 ? kPrefill : 1;
    const PagedSequence seq{pos, n, table.data(), kBlocks};
    std::vector<float> out(static_cast<size_t>(n * d));
    ASSERT_TRUE(
        (*mha)->ForwardPaged(x.data() + pos * d, {seq}, pool, out.data()).ok());
    // The prefill's last rows and every step.
    for (int64_t i = std::max<int64_t>(0, n - 3) * d; i < n * d; ++i) {
      ASSERT_NEAR(out[i], ref[pos * d + i], tol)
          << p.isa << " position " << pos + i / d;
    }
    pos += n;
  }
  omp_set_num_threads(saved_threads);
}

std::vector<LongCase> LongCases() {
  std::vector<LongCase> cases;
  for (const std::string& isa : SupportedKernelIsas()) {
    cases.push_back({isa, false, 0});
    cases.push_back({isa, true, 0});
    cases.push_back({isa, false, 600});
    cases.push_back({isa, true, 0, 32});
    cases.push_back({isa, true, 600, 32});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, PagedDecodeLongTest,
                         ::testing::ValuesIn(LongCases()),
                         [](const ::testing::TestParamInfo<LongCase>& info) {
                           return info.param.isa +
                                  (info.param.bf16 ? "_bf16" : "_f32") +
                                  (info.param.window > 0 ? "_window" : "") +
                                  "_hd" + std::to_string(info.param.head_dim);
                         });

TEST(PagedDecodeValidationTest, BadTablesAreInvalidArgument) {
  AttentionConfig config;
  config.d_model = 32;
  config.num_heads = 4;
  std::mt19937 rng(1);
  auto mha = MultiHeadAttention::Create(
      config, testing::RandomWeights(rng, config, /*with_bias=*/false));
  ASSERT_TRUE(mha.ok());
  KvPoolLayout layout;
  layout.block_tokens = 4;
  layout.num_kv_heads = 4;
  layout.head_dim = 8;
  std::vector<float> k(2 * layout.block_elements()), v(k.size());
  KvPool pool{layout, k.data(), v.data(), 2};
  std::vector<float> x(32 * 5), out(x.size());
  const int32_t table[] = {0, 1};
  PagedSequence too_long{4, 5, table, 2};  // 9 tokens need 3 blocks
  EXPECT_EQ((*mha)->ForwardPaged(x.data(), {too_long}, pool, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  const int32_t outside[] = {0, 7};
  PagedSequence bad_id{0, 5, outside, 2};
  EXPECT_EQ((*mha)->ForwardPaged(x.data(), {bad_id}, pool, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  KvPool wrong = pool;
  wrong.layout.num_kv_heads = 2;
  PagedSequence ok{0, 1, table, 2};
  EXPECT_EQ((*mha)->ForwardPaged(x.data(), {ok}, wrong, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, PagedDecodeTest,
    ::testing::Values(
        PagedCase{4, 4, false}, PagedCase{8, 2, false}, PagedCase{8, 2, true},
        PagedCase{4, 1, true},
        // RoPE half, GQA, window 5
        PagedCase{8, 2, false, 10000.0, AttentionConfig::RopeStyle::kHalf, 0,
                  5},
        // RoPE interleaved, MHA
        PagedCase{4, 4, false, 500.0, AttentionConfig::RopeStyle::kInterleaved},
        // partial rotary, bf16 cache, window
        PagedCase{4, 2, true, 10000.0, AttentionConfig::RopeStyle::kHalf, 8,
                  11},
        // window only
        PagedCase{4, 1, false, 0.0, AttentionConfig::RopeStyle::kHalf, 0, 3}));

}  // namespace
}  // namespace attn::kernels
