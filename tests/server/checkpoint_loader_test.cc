#include "server/models/checkpoint_loader.h"

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/demo_model.h"
#include "server/models/safetensors.h"
#include "tests/server/temp_dir.h"

namespace attn::server {
namespace {

using ::testing::HasSubstr;

ModelConfig Config(int64_t heads, int64_t kv_heads = 0) {
  ModelConfig c;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  return c;
}

absl::StatusOr<AttentionCheckpoint> Extract(const std::string& bytes,
                                            const ModelConfig& config) {
  absl::StatusOr<SafetensorsFile> file =
      SafetensorsFile::Parse(bytes, "ckpt.safetensors");
  if (!file.ok()) return file.status();
  return ExtractAttentionCheckpoint(*file, config);
}

void ExpectInvalid(const absl::StatusOr<AttentionCheckpoint>& result,
                   const std::vector<std::string>& needles) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  const std::string message(result.status().message());
  EXPECT_THAT(message, HasSubstr("ckpt.safetensors"));
  for (const std::string& n : needles) EXPECT_THAT(message, HasSubstr(n));
}

// |got - want| within the rounding error of `dtype`.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want,
                 SafetensorsDType dtype, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const double rel = dtype == SafetensorsDType::kF32    ? 0.0
                     : dtype == SafetensorsDType::kBF16 ? std::ldexp(1, -8)
                                                        : std::ldexp(1, -11);
  // F16 subnormals (below 2^-14) have an absolute error up to 2^-25.
  const double abs = dtype == SafetensorsDType::kF16 ? std::ldexp(1, -25) : 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - want[i]), rel * std::fabs(want[i]) + abs)
        << what << "[" << i << "]";
  }
}

struct Case {
  CheckpointNaming naming;
  SafetensorsDType dtype;
  std::string prefix;
  int64_t kv_heads;
};

class NamingTest : public ::testing::TestWithParam<Case> {};

TEST_P(NamingTest, ExtractsEveryWeight) {
  const Case& c = GetParam();
  constexpr int64_t kDModel = 32, kHeads = 4, kHeadDim = 8;
  const kernels::AttentionWeights w = DeterministicAttentionWeights(
      kDModel, kHeads, c.kv_heads, kHeadDim, /*bias=*/true, /*seed=*/3);
  std::string bytes =
      SerializeAttentionCheckpoint(w, kDModel, c.naming, c.prefix, c.dtype);
  absl::StatusOr<AttentionCheckpoint> ckpt =
      Extract(bytes, Config(kHeads, c.kv_heads));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->naming, c.naming);
  EXPECT_EQ(ckpt->prefix, c.prefix);
  EXPECT_EQ(ckpt->config.d_model, kDModel);
  EXPECT_EQ(ckpt->config.num_heads, kHeads);
  EXPECT_EQ(ckpt->config.num_kv_heads, c.kv_heads);
  EXPECT_EQ(ckpt->config.head_dim, kHeadDim);
  const kernels::AttentionWeights& got = ckpt->weights;
  ExpectClose(got.wq, w.wq, c.dtype, "wq");
  ExpectClose(got.wk, w.wk, c.dtype, "wk");
  ExpectClose(got.wv, w.wv, c.dtype, "wv");
  ExpectClose(got.wo, w.wo, c.dtype, "wo");
  ExpectClose(got.bq, w.bq, c.dtype, "bq");
  ExpectClose(got.bk, w.bk, c.dtype, "bk");
  ExpectClose(got.bv, w.bv, c.dtype, "bv");
  ExpectClose(got.bo, w.bo, c.dtype, "bo");
}

INSTANTIATE_TEST_SUITE_P(
    AllNamings, NamingTest,
    ::testing::Values(
        Case{CheckpointNaming::kTorchPacked, SafetensorsDType::kF32, "", 4},
        Case{CheckpointNaming::kTorchPacked, SafetensorsDType::kF16,
             "encoder.layer.0.attention.", 4},
        Case{CheckpointNaming::kTorchSeparate, SafetensorsDType::kF32, "mha.",
             4},
        Case{CheckpointNaming::kLlama, SafetensorsDType::kF32, "", 4},
        Case{CheckpointNaming::kLlama, SafetensorsDType::kBF16,
             "model.layers.0.self_attn.", 2},
        Case{CheckpointNaming::kLlama, SafetensorsDType::kF16, "", 1},
        Case{CheckpointNaming::kBert, SafetensorsDType::kF32,
             "bert.encoder.layer.3.attention.", 4},
        Case{CheckpointNaming::kBert, SafetensorsDType::kBF16, "", 4}));

// Writes each tensor by hand with a distinct constant value, so that a
// swapped or mis-split tensor is caught independently of
// SerializeAttentionCheckpoint().
std::string Filled(float value, int64_t n) {
  return EncodeFloats(std::vector<float>(n, value), SafetensorsDType::kF32);
}

TEST(CheckpointLoader, TorchPackedSplitsInProjection) {
  constexpr int64_t e = 8;
  std::vector<float> in_proj(3 * e * e);
  for (int64_t i = 0; i < 3 * e * e; ++i) in_proj[i] = float(i / (e * e) + 1);
  std::vector<float> in_bias = {1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  const std::string bytes = SerializeSafetensors({
      {"in_proj_weight",
       "F32",
       {3 * e, e},
       EncodeFloats(in_proj, SafetensorsDType::kF32)},
      {"in_proj_bias",
       "F32",
       {3 * e},
       EncodeFloats(in_bias, SafetensorsDType::kF32)},
      {"out_proj.weight", "F32", {e, e}, Filled(4, e * e)},
      {"out_proj.bias", "F32", {e}, Filled(5, e)},
  });
  absl::StatusOr<AttentionCheckpoint> ckpt = Extract(bytes, Config(2));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const kernels::AttentionWeights& w = ckpt->weights;
  EXPECT_EQ(w.wq, std::vector<float>(e * e, 1));
  EXPECT_EQ(w.wk, std::vector<float>(e * e, 2));
  EXPECT_EQ(w.wv, std::vector<float>(e * e, 3));
  EXPECT_EQ(w.wo, std::vector<float>(e * e, 4));
  EXPECT_EQ(w.bq, std::vector<float>(e, 1));
  EXPECT_EQ(w.bk, std::vector<float>(e, 2));
  EXPECT_EQ(w.bv, std::vector<float>(e, 3));
  EXPECT_EQ(w.bo, std::vector<float>(e, 5));
}

TEST(CheckpointLoader, LlamaGqaWithoutBiasAndExtraTensors) {
  constexpr int64_t e = 16, hd = 4;  // 4 heads, 2 kv heads
  const std::string p = "model.layers.0.self_attn.";
  const std::string bytes = SerializeSafetensors({
      {"model.embed_tokens.weight", "F32", {10, e}, Filled(9, 10 * e)},
      {p + "q_proj.weight", "F32", {4 * hd, e}, Filled(1, 4 * hd * e)},
      {p + "k_proj.weight", "F32", {2 * hd, e}, Filled(2, 2 * hd * e)},
      {p + "v_proj.weight", "F32", {2 * hd, e}, Filled(3, 2 * hd * e)},
      {p + "o_proj.weight", "F32", {e, 4 * hd}, Filled(4, e * 4 * hd)},
      {"model.layers.0.mlp.up_proj.weight", "F32", {4, e}, Filled(9, 4 * e)},
  });
  absl::StatusOr<AttentionCheckpoint> ckpt = Extract(bytes, Config(4, 2));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->naming, CheckpointNaming::kLlama);
  EXPECT_EQ(ckpt->prefix, p);
  EXPECT_EQ(ckpt->weights.wk, std::vector<float>(2 * hd * e, 2));
  EXPECT_EQ(ckpt->weights.wv, std::vector<float>(2 * hd * e, 3));
  EXPECT_TRUE(ckpt->weights.bq.empty());
  EXPECT_TRUE(ckpt->weights.bo.empty());
}

TEST(CheckpointLoader, BertNamesEachTensor) {
  constexpr int64_t e = 8;
  const std::string p = "encoder.layer.0.attention.";
  const std::string bytes = SerializeSafetensors({
      {p + "self.query.weight", "F32", {e, e}, Filled(1, e * e)},
      {p + "self.query.bias", "F32", {e}, Filled(-1, e)},
      {p + "self.key.weight", "F32", {e, e}, Filled(2, e * e)},
      {p + "self.key.bias", "F32", {e}, Filled(-2, e)},
      {p + "self.value.weight", "F32", {e, e}, Filled(3, e * e)},
      {p + "self.value.bias", "F32", {e}, Filled(-3, e)},
      {p + "output.dense.weight", "F32", {e, e}, Filled(4, e * e)},
      {p + "output.dense.bias", "F32", {e}, Filled(-4, e)},
      {p + "output.LayerNorm.weight", "F32", {e}, Filled(7, e)},
  });
  absl::StatusOr<AttentionCheckpoint> ckpt = Extract(bytes, Config(2));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->naming, CheckpointNaming::kBert);
  const kernels::AttentionWeights& w = ckpt->weights;
  EXPECT_EQ(w.wq[0], 1);
  EXPECT_EQ(w.wk[0], 2);
  EXPECT_EQ(w.wv[0], 3);
  EXPECT_EQ(w.wo[0], 4);
  EXPECT_EQ(w.bq[0], -1);
  EXPECT_EQ(w.bk[0], -2);
  EXPECT_EQ(w.bv[0], -3);
  EXPECT_EQ(w.bo[0], -4);
}

TEST(CheckpointLoader, ShapeMismatchNamesTensorAndShapes) {
  constexpr int64_t e = 8;
  const std::string bytes = SerializeSafetensors({
      {"q_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"k_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"v_proj.weight", "F32", {e, e - 1}, Filled(1, e * (e - 1))},
      {"o_proj.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(Extract(bytes, Config(2)),
                {"'v_proj.weight'", "expected shape [8, 8]", "got [8, 7]"});
  // With num_kv_heads 1 the k projection must have 4 rows.
  ExpectInvalid(Extract(bytes, Config(2, 1)),
                {"'k_proj.weight'", "expected shape [4, 8]", "got [8, 8]"});
}

TEST(CheckpointLoader, TorchPackedRejectsWrongInProjRows) {
  constexpr int64_t e = 8;
  const std::string bytes = SerializeSafetensors({
      {"in_proj_weight", "F32", {2 * e, e}, Filled(1, 2 * e * e)},
      {"out_proj.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(Extract(bytes, Config(2)),
                {"'in_proj_weight'", "expected shape [24, 8]", "got [16, 8]"});
}

TEST(CheckpointLoader, MissingTensor) {
  constexpr int64_t e = 8;
  const std::string bytes = SerializeSafetensors({
      {"attn.q_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"attn.k_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"attn.o_proj.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(Extract(bytes, Config(2)),
                {"missing tensor 'attn.v_proj.weight'", "llama"});
}

TEST(CheckpointLoader, AmbiguousPrefixes) {
  constexpr int64_t e = 8;
  const std::string bytes = SerializeSafetensors({
      {"layers.0.q_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"layers.1.q_proj.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(
      Extract(bytes, Config(2)),
      {"ambiguous", "'layers.0.q_proj.weight'", "'layers.1.q_proj.weight'"});
}

TEST(CheckpointLoader, AmbiguousNamings) {
  constexpr int64_t e = 8;
  const std::string bytes = SerializeSafetensors({
      {"in_proj_weight", "F32", {3 * e, e}, Filled(1, 3 * e * e)},
      {"self.query.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(Extract(bytes, Config(2)),
                {"ambiguous", "torch-packed", "bert"});
}

TEST(CheckpointLoader, NoAttentionLayer) {
  const std::string bytes = SerializeSafetensors({
      {"xq_proj.weight", "F32", {2, 2}, Filled(1, 4)},
      {"mlp.weight", "F32", {2, 2}, Filled(1, 4)},
  });
  ExpectInvalid(Extract(bytes, Config(2)),
                {"no attention layer found", "xq_proj.weight", "mlp.weight"});
}

TEST(CheckpointLoader, ConfigThatDoesNotFitDModel) {
  const kernels::AttentionWeights w =
      DeterministicAttentionWeights(32, 4, 4, 8, false, 1);
  const std::string bytes = SerializeAttentionCheckpoint(
      w, 32, CheckpointNaming::kLlama, "", SafetensorsDType::kF32);
  ExpectInvalid(Extract(bytes, Config(3)),
                {"d_model 32", "num_heads (3) must divide d_model (32)"});
}

TEST(CheckpointLoader, RejectsNonFloatAndNonFiniteWeights) {
  constexpr int64_t e = 4;
  std::vector<float> bad(e * e, 0.5f);
  bad[5] = std::nanf("");
  const std::string nan_bytes = SerializeSafetensors({
      {"q_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"k_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"v_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"o_proj.weight",
       "F32",
       {e, e},
       EncodeFloats(bad, SafetensorsDType::kF32)},
  });
  ExpectInvalid(Extract(nan_bytes, Config(1)),
                {"'o_proj.weight'", "element 5 is not finite"});

  const std::string int_bytes = SerializeSafetensors({
      {"q_proj.weight", "I32", {e, e}, std::string(4 * e * e, '\0')},
      {"k_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"v_proj.weight", "F32", {e, e}, Filled(1, e * e)},
      {"o_proj.weight", "F32", {e, e}, Filled(1, e * e)},
  });
  ExpectInvalid(Extract(int_bytes, Config(1)),
                {"'q_proj.weight'", "dtype I32"});
}

TEST(CheckpointLoader, LoadsFromFileAndReportsMalformedFile) {
  testing::TempDir dir;
  const std::string path = dir.Join("model.safetensors");
  const kernels::AttentionWeights w =
      DeterministicAttentionWeights(16, 2, 2, 8, true, 5);
  ASSERT_TRUE(WriteFileBytes(path, SerializeAttentionCheckpoint(
                                       w, 16, CheckpointNaming::kTorchPacked,
                                       "", SafetensorsDType::kF32))
                  .ok());
  absl::StatusOr<AttentionCheckpoint> ckpt =
      LoadAttentionCheckpoint(path, Config(2));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->weights.wq, w.wq);
  EXPECT_EQ(ckpt->weights.bo, w.bo);

  ASSERT_TRUE(
      WriteFileBytes(path, std::string("\x05\0\0\0\0\0\0\0{\"a\":", 13)).ok());
  absl::StatusOr<AttentionCheckpoint> bad =
      LoadAttentionCheckpoint(path, Config(2));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace attn::server
