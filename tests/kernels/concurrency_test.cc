// Several threads call Forward() on one object with different shapes at once;
// every result must match the reference.
#include <omp.h>

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

// The caller may change its OpenMP thread count from one call to the next
// (the server's executor runs small calls on one thread and large ones on
// the team). oneDNN sizes a primitive's scratchpad and work split for the
// thread count it was created with, so primitives are cached per thread
// count: a primitive made for one thread must never run on four, or the
// reverse. Shapes repeat across thread counts, in both orders, with the
// materialising core (weights asked) and the flash core (weights not).
TEST(ConcurrencyTest, ThreadCountMayChangeBetweenCalls) {
  Case c;
  c.config.d_model = 64;
  c.config.num_heads = 4;
  c.batch = 3;
  c.q_len = 40;
  c.kv_len = 40;
  c.causal = true;
  c.seed = 7;
  const CaseData data = MakeCaseData(c);
  Case flash = c;
  flash.return_weights = false;
  auto mha = MultiHeadAttention::Create(c.config, data.weights);
  ASSERT_TRUE(mha.ok()) << mha.status();
  const int saved = omp_get_max_threads();
  for (int threads : {1, 4, 1, 2, 4, 3, 1}) {
    omp_set_num_threads(threads);
    for (const Case& k : {c, flash}) {
      const Comparison r = RunAndCompare(k, data, mha->get());
      EXPECT_EQ(r.error, "") << threads << " threads";
      EXPECT_FALSE(r.has_non_finite) << threads << " threads";
      EXPECT_LE(r.max_output_error, 1e-4) << threads << " threads";
      EXPECT_LE(r.max_weights_error, 1e-4) << threads << " threads";
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace attn::kernels::testing
