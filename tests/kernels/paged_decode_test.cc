// MultiHeadAttention::ForwardPaged against the same layer's Forward (and
// that against the naive reference), with and without rotary embeddings
// and sliding windows: a
// prefill and single-token steps over a pool whose blocks are scattered
// (and shared with a second sequence in the same calls) give the last rows
// of one causal self-attention over the whole prefix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
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
  KvPoolLayout layout;
  layout.block_tokens = 4;
  layout.num_kv_heads = static_cast<int>(c.num_kv_heads);
  layout.head_dim = static_cast<int>(c.head_dim);
  layout.dtype =
      p.bf16 ? KvPoolLayout::Dtype::kBf16 : KvPoolLayout::Dtype::kF32;
  constexpr int64_t kBlocks = 24, kPrefill = 9, kTotal = 17;
  std::vector<uint8_t> k(kBlocks * layout.block_elements() *
                         layout.element_bytes());
  std::vector<uint8_t> v(k.size());
  KvPool pool{layout, k.data(), v.data(), kBlocks};
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
