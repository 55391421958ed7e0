#include "server/models/demo_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/model_config.h"
#include "tests/server/temp_dir.h"

namespace attn::server {
namespace {

TEST(DeterministicRng, MatchesSplitMix64ReferenceVector) {
  // First outputs of splitmix64 seeded with 0, as published with the
  // reference implementation (xoshiro/splitmix64.c) and widely reproduced.
  DeterministicRng rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.Next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.Next(), 0x06c45d188009454fULL);
}

TEST(DeterministicRng, UniformIsInOpenIntervalAndCentred) {
  DeterministicRng rng(42);
  double sum = 0;
  constexpr int kN = 100000;
  for (int i = 0; i < kN; ++i) {
    const float u = rng.Uniform();
    ASSERT_GT(u, -1.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  // The standard deviation of the mean is 1/sqrt(3 kN) ~ 0.0018.
  EXPECT_LT(std::fabs(sum / kN), 0.01);
}

TEST(DemoModel, WeightsAreDeterministicAndScaled) {
  const kernels::AttentionWeights a = DemoWeights();
  const kernels::AttentionWeights b = DemoWeights();
  EXPECT_EQ(a.wq, b.wq);
  EXPECT_EQ(a.wo, b.wo);
  EXPECT_EQ(a.bv, b.bv);
  EXPECT_EQ(a.wq.size(), size_t{kDemoDModel * kDemoDModel});
  EXPECT_EQ(a.wk.size(), size_t{kDemoDModel * kDemoDModel});
  EXPECT_EQ(a.bo.size(), size_t{kDemoDModel});
  EXPECT_NE(a.wq, a.wk);  // each tensor draws fresh values
  const float bound = 1.0f / std::sqrt(float{kDemoDModel});
  for (float x : a.wq) ASSERT_LT(std::fabs(x), bound);
  // The first element follows from the generator: seed, first draw, scale.
  DeterministicRng rng(kDemoSeed);
  EXPECT_EQ(a.wq[0], rng.Uniform() * bound);
}

TEST(DemoModel, WritesALoadableRepository) {
  testing::TempDir dir;
  ASSERT_TRUE(WriteDemoRepository(dir.path()).ok());
  std::ifstream in(dir.Join("demo/config.json"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig(text.str(), "demo/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_heads, kDemoNumHeads);

  absl::StatusOr<AttentionCheckpoint> ckpt =
      LoadAttentionCheckpoint(dir.Join("demo/1/model.safetensors"), *config);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->naming, CheckpointNaming::kTorchPacked);
  EXPECT_EQ(ckpt->config.d_model, kDemoDModel);
  const kernels::AttentionWeights want = DemoWeights();
  EXPECT_EQ(ckpt->weights.wq, want.wq);
  EXPECT_EQ(ckpt->weights.wk, want.wk);
  EXPECT_EQ(ckpt->weights.wv, want.wv);
  EXPECT_EQ(ckpt->weights.wo, want.wo);
  EXPECT_EQ(ckpt->weights.bq, want.bq);
  EXPECT_EQ(ckpt->weights.bk, want.bk);
  EXPECT_EQ(ckpt->weights.bv, want.bv);
  EXPECT_EQ(ckpt->weights.bo, want.bo);
}

}  // namespace
}  // namespace attn::server
