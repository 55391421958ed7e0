#include "server/models/model_repository.h"

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/demo_model.h"
#include "server/models/safetensors.h"
#include "tests/server/temp_dir.h"

namespace attn::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Writes <root>/<name>/config.json and one checkpoint per version.
void WriteModel(const std::string& root, const std::string& name,
                const std::string& config_json,
                const std::vector<std::string>& versions, int64_t d_model = 16,
                int64_t heads = 2) {
  const fs::path dir = fs::path(root) / name;
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFileBytes((dir / "config.json").string(), config_json).ok());
  uint64_t seed = 1;
  for (const std::string& v : versions) {
    fs::create_directories(dir / v);
    const kernels::AttentionWeights w = DeterministicAttentionWeights(
        d_model, heads, heads, d_model / heads, true, seed++);
    ASSERT_TRUE(WriteFileBytes((dir / v / "model.safetensors").string(),
                               SerializeAttentionCheckpoint(
                                   w, d_model, CheckpointNaming::kLlama, "",
                                   SafetensorsDType::kF32))
                    .ok());
  }
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(ModelRepository, LoadsVersionsAndSelectsNewest) {
  testing::TempDir root;
  WriteModel(root.path(), "alpha",
             R"({"num_heads": 2, "version_policy": {"all": true}})",
             {"1", "3", "10"});
  WriteModel(root.path(), "beta",
             R"({"num_heads": 2, "compute_dtype": "bfloat16", "causal": true})",
             {"1"});
  fs::create_directories(root.Join("alpha/notes"));  // ignored: not numeric
  fs::create_directories(root.Join(".hidden"));      // ignored: hidden

  auto repo = ModelRepository::LoadFromDirectory(root.path());
  ASSERT_TRUE(repo.ok()) << repo.status();

  const std::vector<std::shared_ptr<const Model>> all = (*repo)->List();
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0]->name, "alpha");
  EXPECT_EQ(all[0]->version, 1);
  EXPECT_EQ(all[1]->version, 3);
  EXPECT_EQ(all[2]->version, 10);  // numeric, not lexicographic order
  EXPECT_EQ(all[3]->name, "beta");

  auto newest = (*repo)->Get("alpha", 0);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_EQ((*newest)->version, 10);
  EXPECT_EQ((*newest)->source, root.Join("alpha/10/model.safetensors"));
  EXPECT_EQ((*newest)->attention.d_model, 16);
  EXPECT_EQ((*newest)->attention.num_heads, 2);
  EXPECT_EQ((*newest)->attention.head_dim, 8);
  ASSERT_NE((*newest)->kernel, nullptr);

  auto v3 = (*repo)->Get("alpha", 3);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ((*v3)->version, 3);

  auto beta = (*repo)->Get("beta", 1);
  ASSERT_TRUE(beta.ok());
  EXPECT_TRUE((*beta)->config.causal);
  EXPECT_EQ((*beta)->attention.compute_dtype, kernels::ComputeDType::kBFloat16);

  absl::Status missing_version = (*repo)->Get("alpha", 2).status();
  EXPECT_EQ(missing_version.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing_version), HasSubstr("'alpha'"));
  EXPECT_THAT(Message(missing_version), HasSubstr("version 2"));
  EXPECT_THAT(Message(missing_version), HasSubstr("1, 3, 10"));

  absl::Status missing_model = (*repo)->Get("gamma", 0).status();
  EXPECT_EQ(missing_model.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing_model), HasSubstr("'gamma'"));
  EXPECT_THAT(Message(missing_model), HasSubstr("alpha, beta"));
}

TEST(ModelRepository, VersionPolicySelectsVersions) {
  testing::TempDir root;
  WriteModel(root.path(), "dflt", R"({"num_heads": 2})", {"1", "2", "10"});
  WriteModel(root.path(), "two",
             R"({"num_heads": 2, "version_policy": {"latest": 2}})",
             {"1", "2", "10"});
  WriteModel(root.path(), "spec",
             R"({"num_heads": 2, "version_policy": {"specific": [2, 1, 7]}})",
             {"1", "2", "10"});
  auto repo = ModelRepository::LoadFromDirectory(root.path());
  ASSERT_TRUE(repo.ok()) << repo.status();
  std::vector<std::string> got;
  for (const ModelHandle& m : (*repo)->List()) {
    got.push_back(m->name + "/" + std::to_string(m->version));
  }
  EXPECT_THAT(got, ::testing::ElementsAre("dflt/10", "spec/1", "spec/2",
                                          "two/2", "two/10"));
  auto spec_newest = (*repo)->Get("spec", 0);
  ASSERT_TRUE(spec_newest.ok());
  EXPECT_EQ((*spec_newest)->version, 2);  // newest of those served

  testing::TempDir none;
  WriteModel(none.path(), "m",
             R"({"num_heads": 2, "version_policy": {"specific": [5]}})", {"1"});
  auto empty = ModelRepository::LoadFromDirectory(none.path());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(empty.status()), HasSubstr("specific [5]"));
}

TEST(ModelRepository, PublishAndRemoveAtRunTime) {
  testing::TempDir root;
  WriteModel(root.path(), "m",
             R"({"num_heads": 2, "version_policy": {"all": true}})",
             {"1", "2"});
  auto loaded = ModelRepository::LoadFromDirectory(root.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ModelRepository routes;
  EXPECT_EQ(routes.Get("m", 0).status().code(), absl::StatusCode::kNotFound);
  for (const ModelHandle& m : (*loaded)->List()) {
    EXPECT_EQ(routes.Publish(m), nullptr);
  }
  ModelHandle v2 = *routes.Get("m", 0);
  EXPECT_EQ(v2->version, 2);
  std::weak_ptr<const Model> watch = v2;
  loaded->reset();
  // Out of routing at once; alive while a request (here: v2) holds it.
  EXPECT_EQ(routes.Remove("m", 2), v2);
  EXPECT_EQ((*routes.Get("m", 0))->version, 1);
  EXPECT_EQ(routes.Get("m", 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(watch.expired());
  v2.reset();
  EXPECT_TRUE(watch.expired());
  EXPECT_NE(routes.Remove("m", 1), nullptr);
  EXPECT_EQ(routes.Remove("m", 1), nullptr);
  EXPECT_TRUE(routes.List().empty());
}

TEST(ModelRepository, MissingRootIsNotFound) {
  testing::TempDir root;
  auto repo = ModelRepository::LoadFromDirectory(root.Join("nope"));
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(repo.status()), HasSubstr("nope"));
}

TEST(ModelRepository, EmptyRepositoryIsAnError) {
  testing::TempDir root;
  auto repo = ModelRepository::LoadFromDirectory(root.path());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(repo.status()), HasSubstr("empty"));
}

TEST(ModelRepository, ModelWithoutVersionsIsAnError) {
  testing::TempDir root;
  WriteModel(root.path(), "m", R"({"num_heads": 2})", {});
  fs::create_directories(root.Join("m/latest"));
  auto repo = ModelRepository::LoadFromDirectory(root.path());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(repo.status()), HasSubstr(root.Join("m")));
  EXPECT_THAT(Message(repo.status()), HasSubstr("no version directory"));
}

TEST(ModelRepository, VersionWithoutCheckpointIsAnError) {
  testing::TempDir root;
  WriteModel(root.path(), "m", R"({"num_heads": 2})", {"1"});
  fs::create_directories(root.Join("m/2"));
  auto repo = ModelRepository::LoadFromDirectory(root.path());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(repo.status()), HasSubstr(root.Join("m/2")));
  EXPECT_THAT(Message(repo.status()), HasSubstr("model.safetensors"));
}

TEST(ModelRepository, VersionZeroOrLeadingZeroIsAnError) {
  for (const char* bad : {"0", "007"}) {
    testing::TempDir root;
    WriteModel(root.path(), "m", R"({"num_heads": 2})", {"1", bad});
    auto repo = ModelRepository::LoadFromDirectory(root.path());
    EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(repo.status()), HasSubstr(root.Join("m/") + bad));
  }
}

TEST(ModelRepository, MissingOrBadConfigIsAnError) {
  {
    testing::TempDir root;
    WriteModel(root.path(), "m", R"({"num_heads": 2})", {"1"});
    fs::remove(root.Join("m/config.json"));
    auto repo = ModelRepository::LoadFromDirectory(root.path());
    EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(repo.status()), HasSubstr(root.Join("m/config.json")));
  }
  {
    testing::TempDir root;
    WriteModel(root.path(), "m", R"({"num_heads": 2, "heads": 2})", {"1"});
    auto repo = ModelRepository::LoadFromDirectory(root.path());
    EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(repo.status()), HasSubstr(root.Join("m/config.json")));
    EXPECT_THAT(Message(repo.status()), HasSubstr("'heads'"));
  }
  {
    // num_heads 3 does not divide d_model 16.
    testing::TempDir root;
    WriteModel(root.path(), "m", R"({"num_heads": 3})", {"1"});
    auto repo = ModelRepository::LoadFromDirectory(root.path());
    EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(repo.status()),
                HasSubstr(root.Join("m/1/model.safetensors")));
    EXPECT_THAT(Message(repo.status()), HasSubstr("num_heads (3)"));
  }
}

TEST(ModelRepository, MalformedCheckpointNamesTheFile) {
  testing::TempDir root;
  WriteModel(root.path(), "m", R"({"num_heads": 2})", {"1"});
  ASSERT_TRUE(
      WriteFileBytes(root.Join("m/1/model.safetensors"), "garbage!garbage")
          .ok());
  auto repo = ModelRepository::LoadFromDirectory(root.path());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(repo.status()),
              HasSubstr(root.Join("m/1/model.safetensors")));
}

// Runs both models on the same input; outputs must be bit-identical since
// the weights are.
std::vector<float> RunOnce(const Model& model) {
  const int64_t e = model.attention.d_model;
  constexpr int64_t kLen = 5;
  std::vector<float> x(kLen * e);
  DeterministicRng rng(99);
  for (float& v : x) v = rng.Uniform();
  std::vector<float> y(kLen * e);
  kernels::AttentionInput in;
  in.batch = 1;
  in.q_len = in.kv_len = kLen;
  in.query = in.key = in.value = x.data();
  absl::Status s =
      model.kernel->Forward(in, kernels::AttentionOutput{y.data()});
  EXPECT_TRUE(s.ok()) << s;
  return y;
}

TEST(ModelRepository, DemoMatchesItsWrittenRepository) {
  auto demo = ModelRepository::CreateDemo();
  ASSERT_TRUE(demo.ok()) << demo.status();
  auto builtin = (*demo)->Get("demo", 0);
  ASSERT_TRUE(builtin.ok()) << builtin.status();
  EXPECT_EQ((*builtin)->name, "demo");
  EXPECT_EQ((*builtin)->version, 1);
  EXPECT_EQ((*builtin)->source, "<builtin>");
  EXPECT_EQ((*builtin)->attention.d_model, 256);
  EXPECT_EQ((*builtin)->attention.num_heads, 4);
  EXPECT_EQ((*builtin)->attention.head_dim, 64);
  ASSERT_EQ((*demo)->List().size(), 1u);

  testing::TempDir root;
  ASSERT_TRUE(WriteDemoRepository(root.path()).ok());
  auto loaded_repo = ModelRepository::LoadFromDirectory(root.path());
  ASSERT_TRUE(loaded_repo.ok()) << loaded_repo.status();
  auto loaded = (*loaded_repo)->Get("demo", 1);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(RunOnce(**builtin), RunOnce(**loaded));
}

}  // namespace
}  // namespace attn::server
