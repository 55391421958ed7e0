// Several threads call Forward() on one object with different shapes at once;
// every result must match the reference.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "tests/kernels/test_util.h"

namespace attn::kernels::testing {
namespace {

TEST(ConcurrencyTest, ForwardFromManyThreads) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 6;
  Case base;
  base.config.d_model = 32;
  base.config.num_heads = 4;
  base.config.num_kv_heads = 2;
  base.self_attention = false;
  base.seed = 99;  // every case shares the weights
  const CaseData shared = MakeCaseData(base);
  auto mha = MultiHeadAttention::Create(base.config, shared.weights);
  ASSERT_TRUE(mha.ok()) << mha.status();

  std::vector<Case> cases;
  std::vector<CaseData> data;
  for (int t = 0; t < kThreads; ++t) {
    Case c = base;
    c.batch = 1 + t;
    c.q_len = 3 + 7 * t;
    c.kv_len = 20 - 3 * t;
    c.causal = t % 2 == 1;
    c.mask_kind = t == 2 ? MaskKind::kAdditive : MaskKind::kNone;
    c.key_lengths = t == 3 ? KeyLengths::kWithZero : KeyLengths::kNone;
    cases.push_back(c);
    data.push_back(MakeCaseData(c));
  }
  std::vector<Comparison> worst(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int it = 0; it < kIterations; ++it) {
        // Alternate shapes between threads to exercise the shared cache.
        const int k = (t + it) % kThreads;
        const Comparison r = RunAndCompare(cases[k], data[k], mha->get());
        if (!r.error.empty()) worst[t].error = r.error;
        worst[t].has_non_finite |= r.has_non_finite;
        worst[t].max_output_error =
            std::max(worst[t].max_output_error, r.max_output_error);
        worst[t].max_weights_error =
            std::max(worst[t].max_weights_error, r.max_weights_error);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(worst[t].error, "") << "thread " << t;
    EXPECT_FALSE(worst[t].has_non_finite) << "thread " << t;
    EXPECT_LE(worst[t].max_output_error, 1e-4) << "thread " << t;
    EXPECT_LE(worst[t].max_weights_error, 1e-4) << "thread " << t;
  }
}

}  // namespace
}  // namespace attn::kernels::testing
