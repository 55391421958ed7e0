// The executor's thread policy: FLOP counts against a hand count, and the
// thread count each size of call gets.
#include "server/serving/kernel_threads.h"

#include <vector>

#include "absl/time/time.h"
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

TEST(KernelThreadsTest, CandidatesAreOneThreadAndTheTeamBelowTheBound) {
  EXPECT_EQ(CandidateThreads(1000, 4), (std::vector<int>{1, 4}));
  EXPECT_EQ(CandidateThreads(kTeamAlwaysFlops - 1, 2),
            (std::vector<int>{1, 2}));
  EXPECT_EQ(CandidateThreads(kTeamAlwaysFlops, 2), (std::vector<int>{2}));
  EXPECT_EQ(CandidateThreads(1000, 1), (std::vector<int>{1}));
}

// Feeds the chooser `calls` calls of `flops`, each taking `one` on one
// thread and `team` on the team; returns how many ran on the team.
int TeamCalls(KernelThreadChooser& chooser, int64_t flops, int calls,
              absl::Duration one, absl::Duration team) {
  int on_team = 0;
  for (int i = 0; i < calls; ++i) {
    const int threads = chooser.Choose(flops);
    EXPECT_TRUE(threads == 1 || threads == chooser.budget()) << threads;
    if (threads != 1) ++on_team;
    chooser.Record(flops, threads, threads == 1 ? one : team);
  }
  return on_team;
}

TEST(KernelThreadChooserTest, KeepsTheFasterChoiceAndStillExplores) {
  const int64_t flops = 8'650'752;  // the demo model's 16-token call
  const int calls = 10 * KernelThreadChooser::kExploreEvery;
  KernelThreadChooser alone_wins(2);
  const int a = TeamCalls(alone_wins, flops, calls, absl::Microseconds(90),
                          absl::Microseconds(300));
  // The first kMinSamples on the team, then one exploring call in 32.
  EXPECT_GE(a, KernelThreadChooser::kMinSamples);
  EXPECT_LE(a, KernelThreadChooser::kMinSamples + 11);
  KernelThreadChooser team_wins(2);
  const int t = TeamCalls(team_wins, flops, calls, absl::Microseconds(190),
                          absl::Microseconds(140));
  EXPECT_GE(t, calls - KernelThreadChooser::kMinSamples - 11);
}

TEST(KernelThreadChooserTest, FollowsAChangeAndKeepsSizesApart) {
  const int64_t small = 8'000'000, large = 400'000'000;
  KernelThreadChooser chooser(4);
  const int n = 4 * KernelThreadChooser::kExploreEvery;
  // Large calls gain from the team, small ones do not.
  TeamCalls(chooser, large, n, absl::Milliseconds(8), absl::Milliseconds(3));
  TeamCalls(chooser, small, n, absl::Microseconds(90), absl::Microseconds(300));
  EXPECT_EQ(chooser.Choose(large), 4);
  chooser.Record(large, 4, absl::Milliseconds(3));
  EXPECT_EQ(chooser.Choose(small), 1);
  chooser.Record(small, 1, absl::Microseconds(90));
  // The team becomes slow for large calls (say, the cores got busy): the
  // exploring calls notice and the chooser moves to one thread.
  const int moved =
      TeamCalls(chooser, large, 12 * KernelThreadChooser::kExploreEvery,
                absl::Milliseconds(8), absl::Milliseconds(30));
  EXPECT_LT(moved, 12 * KernelThreadChooser::kExploreEvery / 2);
  EXPECT_EQ(chooser.Choose(large), 1);
}

TEST(KernelThreadChooserTest, HugeCallsAndASingleThreadBudgetNeverChoose) {
  KernelThreadChooser chooser(2);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(chooser.Choose(kTeamAlwaysFlops), 2);
    chooser.Record(kTeamAlwaysFlops, 2, absl::Seconds(1));
  }
  KernelThreadChooser single(1);
  EXPECT_EQ(single.Choose(1000), 1);
  EXPECT_EQ(single.Choose(kTeamAlwaysFlops * 10), 1);
}

}  // namespace
}  // namespace attn::server
