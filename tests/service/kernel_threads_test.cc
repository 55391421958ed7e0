// The executor's thread policy: FLOP counts against a hand count, and the
// thread count each size of call gets.
#include "server/serving/kernel_threads.h"

#include "gtest/gtest.h"

namespace attn::server {
namespace {

kernels::AttentionConfig Config(int64_t d, int64_t heads, int64_t kv_heads) {
  kernels::AttentionConfig c;
  c.d_model = d;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = d / heads;
  return c;
}

TEST(KernelThreadsTest, FlopsOfTheDemoRequest) {
  // 16 tokens, d_model 256: four 16x256x256 GEMMs and 16*16 pairs over 256
  // query widths, twice (Q.K^T and P.V).
  EXPECT_EQ(AttentionFlops(Config(256, 4, 4), 1, 16, 16, false),
            4 * 2 * 16 * 256 * 256 + 4 * 16 * 16 * 256);
}

TEST(KernelThreadsTest, CausalCountsVisiblePairsAndGqaNarrowsKv) {
  const kernels::AttentionConfig c = Config(64, 4, 2);  // head_dim 16
  // 3 sequences of 4 tokens: Q and output GEMMs 64 wide, K and V 32 wide
  // (2 kv heads); 1+2+3+4 = 10 visible pairs per sequence.
  EXPECT_EQ(AttentionFlops(c, 3, 4, 4, true),
            2 * 12 * 64 * 64 * 2 + 2 * 12 * 64 * 32 * 2 + 4 * 3 * 10 * 64);
  // 2 queries at the end of 5 keys see 4 and 5 keys: 9 of 10 pairs.
  EXPECT_EQ(
      AttentionFlops(c, 1, 2, 5, false) - AttentionFlops(c, 1, 2, 5, true),
      4 * 1 * 64);
}

TEST(KernelThreadsTest, SmallCallsRunAloneLargeOnesOnTheTeam) {
  const int64_t demo = AttentionFlops(Config(256, 4, 4), 1, 16, 16, false);
  EXPECT_EQ(KernelThreadsFor(demo, 2), 1);
  EXPECT_EQ(KernelThreadsFor(demo, 64), 1);
  EXPECT_EQ(KernelThreadsFor(0, 8), 1);
  EXPECT_EQ(KernelThreadsFor(2 * kMinFlopsPerThread - 1, 8), 1);
  EXPECT_EQ(KernelThreadsFor(2 * kMinFlopsPerThread, 8), 2);
  const int64_t big = AttentionFlops(Config(768, 12, 12), 8, 512, 512, false);
  EXPECT_EQ(KernelThreadsFor(big, 2), 2);
  EXPECT_EQ(KernelThreadsFor(big, 16), 16);
  EXPECT_EQ(KernelThreadsFor(big, 1), 1);
}

}  // namespace
}  // namespace attn::server
