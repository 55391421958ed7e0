#include "server/models/model_config.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attn::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kPath[] = "/repo/m/config.json";

void ExpectInvalid(const std::string& json,
                   const std::vector<std::string>& needles) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(json, kPath);
  ASSERT_FALSE(config.ok()) << json;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(config.status().message());
  EXPECT_THAT(message, HasSubstr(kPath));
  for (const std::string& n : needles) EXPECT_THAT(message, HasSubstr(n));
}

TEST(ParseModelConfig, ReadsEveryKey) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      R"({"num_heads": 8, "num_kv_heads": 2, "head_dim": 32, "causal": true,
          "compute_dtype": "bfloat16", "scale": 0.125,
          "max_sequence_length": 2048,
          "batching": {"max_batch_tokens": 1000, "max_batch_requests": 1,
                       "max_queue_delay_us": 0, "max_queue_size": 7,
                       "default_timeout_us": 5000}})",
      kPath);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_TRUE(c->causal);
  EXPECT_EQ(c->compute_dtype, "bfloat16");
  EXPECT_EQ(c->scale, 0.125f);
  EXPECT_EQ(c->max_sequence_length, 2048);
  EXPECT_EQ(c->batching.max_batch_tokens, 1000);
  EXPECT_EQ(c->batching.max_batch_requests, 1);
  EXPECT_EQ(c->batching.max_queue_delay_us, 0);
  EXPECT_EQ(c->batching.max_queue_size, 7);
  EXPECT_EQ(c->batching.default_timeout_us, 5000);
}

TEST(ParseModelConfig, KeepsDefaultsForMissingKeys) {
  absl::StatusOr<ModelConfig> c =
      ParseModelConfig(R"({"num_heads": 4, "batching": {}})", kPath);
  ASSERT_TRUE(c.ok()) << c.status();
  const ModelConfig defaults;
  EXPECT_EQ(c->num_heads, 4);
  EXPECT_EQ(c->num_kv_heads, defaults.num_kv_heads);
  EXPECT_EQ(c->head_dim, defaults.head_dim);
  EXPECT_EQ(c->causal, defaults.causal);
  EXPECT_EQ(c->compute_dtype, defaults.compute_dtype);
  EXPECT_EQ(c->scale, defaults.scale);
  EXPECT_EQ(c->max_sequence_length, defaults.max_sequence_length);
  EXPECT_EQ(c->batching.max_batch_tokens, defaults.batching.max_batch_tokens);
  EXPECT_EQ(c->batching.max_queue_size, defaults.batching.max_queue_size);
}

// The default warm-up shapes fit a model whose max_sequence_length is below
// their seq (found by tests/fuzz/config_fuzzer).
TEST(ParseModelConfig, DefaultWarmupFitsShortModels) {
  auto c = ParseModelConfig(R"({"num_heads": 4, "max_sequence_length": 1})",
                            "c.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_FALSE(c->warmup.empty());
  for (const WarmupShape& w : c->warmup) EXPECT_EQ(w.seq, 1);
  auto wide = ParseModelConfig(R"({"num_heads": 4})", "c.json");
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->warmup.front().seq, WarmupShape{}.seq);
}

TEST(ParseModelConfig, VersionPolicy) {
  auto dflt = ParseModelConfig(R"({"num_heads": 2})", "c.json");
  ASSERT_TRUE(dflt.ok());
  EXPECT_EQ(dflt->version_policy.ToString(), "latest 1");
  EXPECT_THAT(dflt->version_policy.Select({1, 2, 5}), ElementsAre(5));
  auto latest = ParseModelConfig(
      R"({"num_heads": 2, "version_policy": {"latest": 2}})", "c.json");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_THAT(latest->version_policy.Select({1, 2, 5}), ElementsAre(2, 5));
  EXPECT_THAT(latest->version_policy.Select({3}), ElementsAre(3));
  auto all = ParseModelConfig(
      R"({"num_heads": 2, "version_policy": {"all": true}})", "c.json");
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(all->version_policy.Select({1, 2, 5}), ElementsAre(1, 2, 5));
  auto specific = ParseModelConfig(
      R"({"num_heads": 2, "version_policy": {"specific": [5, 1, 1, 9]}})",
      "c.json");
  ASSERT_TRUE(specific.ok());
  EXPECT_EQ(specific->version_policy.ToString(), "specific [1, 5, 9]");
  EXPECT_THAT(specific->version_policy.Select({1, 2, 5}), ElementsAre(1, 5));

  for (const char* bad :
       {R"({"latest": 0})", R"({"latest": 1, "all": true})",
        R"({"all": false})", R"({"specific": []})", R"({"specific": [0]})",
        R"({"specific": ["1"]})", R"({"newest": 1})", R"({})", R"([1])"}) {
    auto c = ParseModelConfig(
        std::string(R"({"num_heads": 2, "version_policy": )") + bad + "}",
        "c.json");
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("c.json")) << bad;
    EXPECT_THAT(std::string(c.status().message()), HasSubstr("version_policy"))
        << bad;
  }
}

TEST(ParseModelConfig, RejectsSyntaxAndShape) {
  ExpectInvalid("{\"num_heads\": 4", {"not valid JSON"});
  ExpectInvalid("[4]", {"must be a JSON object"});
  ExpectInvalid("{}", {"'num_heads' is required"});
}

TEST(ParseModelConfig, RejectsUnknownKeys) {
  ExpectInvalid(R"({"num_heads": 4, "num_head": 4})",
                {"'num_head' is not a known key", "num_heads"});
  ExpectInvalid(
      R"({"num_heads": 4, "batching": {"max_batch_size": 8}})",
      {"'batching.max_batch_size' is not a known key", "max_batch_tokens"});
}

TEST(ParseModelConfig, RejectsWrongTypes) {
  ExpectInvalid(R"({"num_heads": "8"})", {"'num_heads' must be an integer"});
  ExpectInvalid(R"({"num_heads": 8.5})", {"'num_heads' must be an integer"});
  ExpectInvalid(R"({"num_heads": true})", {"'num_heads' must be an integer"});
  ExpectInvalid(R"({"num_heads": 8, "causal": 1})",
                {"'causal' must be true or false"});
  ExpectInvalid(R"({"num_heads": 8, "scale": "0.1"})",
                {"'scale' must be a number"});
  ExpectInvalid(R"({"num_heads": 8, "compute_dtype": 16})",
                {"'compute_dtype' must be a string"});
  ExpectInvalid(R"({"num_heads": 8, "batching": []})",
                {"'batching' must be an object"});
  ExpectInvalid(R"({"num_heads": 8, "batching": {"max_queue_size": 1.5}})",
                {"'batching.max_queue_size' must be an integer"});
}

TEST(ParseModelConfig, RejectsDeeplyNestedValueWithoutRecursing) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ExpectInvalid(
      R"({"num_heads": 1, "batching": {"max_batch_tokens": )" + deep + "}}",
      {"'batching.max_batch_tokens' must be an integer, got an "
       "array"});
}

TEST(ParseModelConfig, RejectsOutOfRangeValues) {
  ExpectInvalid(R"({"num_heads": 0})", {"'num_heads' must be >= 1, got 0"});
  ExpectInvalid(R"({"num_heads": 8, "scale": 0})",
                {"'scale' must be a finite number > 0"});
  ExpectInvalid(R"({"num_heads": 8, "scale": -1.0})",
                {"'scale' must be a finite number > 0"});
  ExpectInvalid(R"({"num_heads": 8, "max_sequence_length": 0})",
                {"'max_sequence_length' must be >= 1"});
  ExpectInvalid(R"({"num_heads": 8, "batching": {"max_queue_delay_us": -1}})",
                {"'batching.max_queue_delay_us' must be >= 0, got -1"});
  ExpectInvalid(R"({"num_heads": 8, "batching": {"max_batch_tokens": 0}})",
                {"'batching.max_batch_tokens' must be >= 1"});
  ExpectInvalid(R"({"num_heads": 9223372036854775808})", {"too large"});
}

TEST(ParseModelConfig, ReadsSessionKeys) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      R"({"num_heads": 4, "kv_cache_dtype": "bfloat16",
          "sessions": {"max_sessions": 7, "idle_timeout_s": 0.5}})",
      kPath);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kv_cache_dtype, "bfloat16");
  EXPECT_EQ(c->sessions.max_sessions, 7);
  EXPECT_DOUBLE_EQ(c->sessions.idle_timeout_s, 0.5);
  absl::StatusOr<ModelConfig> d =
      ParseModelConfig(R"({"num_heads": 4})", kPath);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->kv_cache_dtype, "float32");
  EXPECT_EQ(d->sessions.max_sessions, 1024);
  EXPECT_DOUBLE_EQ(d->sessions.idle_timeout_s, 300);
}

TEST(ParseModelConfig, RejectsBadSessionKeys) {
  EXPECT_THAT(
      ParseModelConfig(R"({"num_heads": 4, "kv_cache_dtype": "fp8"})", kPath)
          .status()
          .message(),
      HasSubstr("'kv_cache_dtype' must be \"float32\" or \"bfloat16\""));
  EXPECT_THAT(ParseModelConfig(
                  R"({"num_heads": 4, "sessions": {"max_sessions": 0}})", kPath)
                  .status()
                  .message(),
              HasSubstr("'sessions.max_sessions' must be >= 1"));
  EXPECT_THAT(ParseModelConfig(
                  R"({"num_heads": 4, "sessions": {"idle_timeout": 5}})", kPath)
                  .status()
                  .message(),
              HasSubstr("'sessions.idle_timeout' is not a known key"));
}

TEST(ParseModelConfig, ReadsRopeAndWindowKeys) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      R"({"num_heads": 8, "causal": true, "rope_theta": 500000,
          "rope_style": "interleaved", "rope_dims": 16,
          "sliding_window": 4096})",
      kPath);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->rope_style, "interleaved");
  EXPECT_EQ(c->rope_dims, 16);
  EXPECT_EQ(c->sliding_window, 4096);
  absl::StatusOr<kernels::AttentionConfig> a = ResolveAttentionConfig(*c, 512);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->rope_theta, 500000.0);
  EXPECT_EQ(a->rope_style, kernels::AttentionConfig::RopeStyle::kInterleaved);
  EXPECT_EQ(a->rope_dims, 16);
  EXPECT_EQ(a->sliding_window, 4096);
  const ModelConfig defaults;
  EXPECT_EQ(defaults.rope_theta, 0.0);
  EXPECT_EQ(defaults.rope_style, "half");
  EXPECT_EQ(defaults.rope_dims, 0);
  EXPECT_EQ(defaults.sliding_window, 0);
}

TEST(ParseModelConfig, RejectsBadRopeAndWindowKeys) {
  ExpectInvalid(R"({"num_heads": 2, "rope_theta": -1})",
                {"'rope_theta' must be a finite number >= 0"});
  ExpectInvalid(R"({"num_heads": 2, "rope_theta": "10000"})",
                {"'rope_theta' must be a number"});
  ExpectInvalid(
      R"({"num_heads": 2, "rope_theta": 10000, "rope_style": "neox"})",
      {"'rope_style' must be \"half\"", "neox"});
  ExpectInvalid(R"({"num_heads": 2, "rope_theta": 10000, "rope_dims": 7})",
                {"'rope_dims' must be even"});
  ExpectInvalid(R"({"num_heads": 2, "rope_theta": 10000, "rope_dims": -2})",
                {"'rope_dims' must be >= 0"});
  ExpectInvalid(R"({"num_heads": 2, "rope_dims": 8})",
                {"'rope_dims' is set but 'rope_theta' is 0"});
  ExpectInvalid(
      R"({"num_heads": 2, "head_dim": 8, "rope_theta": 1e4, "rope_dims": 16})",
      {"'rope_dims' (16) must be <= head_dim (8)"});
  ExpectInvalid(R"({"num_heads": 2, "causal": true, "sliding_window": -1})",
                {"'sliding_window' must be >= 0"});
  ExpectInvalid(R"({"num_heads": 2, "sliding_window": 64})",
                {"'sliding_window' needs a causal model"});
  // rope_dims past a head_dim known only from the checkpoint.
  absl::StatusOr<ModelConfig> c = ParseModelConfig(
      R"({"num_heads": 4, "rope_theta": 10000, "rope_dims": 96})", kPath);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<kernels::AttentionConfig> a = ResolveAttentionConfig(*c, 256);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("rope_dims (96) must be <= head_dim (64)"));
}

TEST(ParseModelConfig, RejectsBadComputeDType) {
  ExpectInvalid(R"({"num_heads": 8, "compute_dtype": "float16"})",
                {"'compute_dtype'", "\"float16\"", "bfloat16"});
}

TEST(ParseModelConfig, RejectsKvHeadsNotDividingHeads) {
  ExpectInvalid(R"({"num_heads": 8, "num_kv_heads": 3})",
                {"'num_kv_heads'", "(3) must divide num_heads (8)"});
}

TEST(ResolveAttentionConfig, FillsDefaults) {
  ModelConfig c;
  c.num_heads = 4;
  absl::StatusOr<kernels::AttentionConfig> a = ResolveAttentionConfig(c, 256);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->d_model, 256);
  EXPECT_EQ(a->num_heads, 4);
  EXPECT_EQ(a->num_kv_heads, 4);
  EXPECT_EQ(a->head_dim, 64);
  EXPECT_FLOAT_EQ(a->scale, 1.0f / std::sqrt(64.0f));
  EXPECT_EQ(a->compute_dtype, kernels::ComputeDType::kFloat32);
}

TEST(ResolveAttentionConfig, KeepsExplicitValues) {
  ModelConfig c;
  c.num_heads = 6;  // does not divide 256, but head_dim is explicit
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.scale = 0.5f;
  c.compute_dtype = "bfloat16";
  absl::StatusOr<kernels::AttentionConfig> a = ResolveAttentionConfig(c, 256);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->num_kv_heads, 2);
  EXPECT_EQ(a->head_dim, 32);
  EXPECT_EQ(a->scale, 0.5f);
  EXPECT_EQ(a->compute_dtype, kernels::ComputeDType::kBFloat16);
}

TEST(ResolveAttentionConfig, RejectsHeadsNotDividingDModel) {
  ModelConfig c;
  c.num_heads = 3;
  absl::StatusOr<kernels::AttentionConfig> a = ResolveAttentionConfig(c, 256);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a.status().message()),
              HasSubstr("num_heads (3) must divide d_model (256)"));
  EXPECT_EQ(ResolveAttentionConfig(c, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attn::server
