// ModelLifecycle against a real repository directory: version policy,
// reload, rollback, refusals that keep the served version, reference-counted
// unloading, explicit load/unload and path checks.
#include "server/models/model_lifecycle.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/demo_model.h"
#include "server/models/safetensors.h"
#include "tests/server/temp_dir.h"

namespace attn::server {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kDModel = 16;

std::string Checkpoint(uint64_t seed) {
  const kernels::AttentionWeights w =
      DeterministicAttentionWeights(kDModel, 2, 2, kDModel / 2, true, seed);
  return SerializeAttentionCheckpoint(w, kDModel, CheckpointNaming::kLlama, "",
                                      SafetensorsDType::kF32);
}

void WriteVersion(const std::string& root, const std::string& name,
                  int64_t version, const std::string& bytes) {
  const fs::path dir = fs::path(root) / name / std::to_string(version);
  fs::create_directories(dir);
  ASSERT_TRUE(WriteFileBytes((dir / "model.safetensors").string(), bytes).ok());
}

void WriteConfig(const std::string& root, const std::string& name,
                 const std::string& json) {
  fs::create_directories(fs::path(root) / name);
  ASSERT_TRUE(
      WriteFileBytes((fs::path(root) / name / "config.json").string(), json)
          .ok());
}

// Records what the lifecycle reports.
class RecordingObserver : public LifecycleObserver {
 public:
  void VersionReady(const Model& m) override {
    absl::MutexLock l(&mu_);
    events_.push_back("ready " + m.name + "/" + std::to_string(m.version));
  }
  void VersionUnrouted(const std::string& n, int64_t v) override {
    absl::MutexLock l(&mu_);
    events_.push_back("unrouted " + n + "/" + std::to_string(v));
  }
  void VersionFreed(const std::string& n, int64_t v) override {
    absl::MutexLock l(&mu_);
    events_.push_back("freed " + n + "/" + std::to_string(v));
  }
  void LoadSucceeded(const std::string&, absl::Duration) override {}
  void LoadFailed(const std::string& n) override {
    absl::MutexLock l(&mu_);
    ++failures_[n];
  }
  int failures(const std::string& n) {
    absl::MutexLock l(&mu_);
    return failures_[n];
  }
  std::vector<std::string> events() {
    absl::MutexLock l(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> events_;
  std::map<std::string, int> failures_;
};

class LifecycleTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<ModelLifecycle>> Start(bool exit = true) {
    ModelLifecycle::Options o;
    o.root = root_.path();
    o.observer = &observer_;
    o.exit_on_load_error = exit;
    o.log = [this](const std::string& line) {
      absl::MutexLock l(&log_mu_);
      log_ += line + "\n";
    };
    return ModelLifecycle::Start(o);
  }
  std::string log() {
    absl::MutexLock l(&log_mu_);
    return log_;
  }
  static int64_t Newest(const ModelLifecycle& lc, const std::string& name) {
    auto m = lc.repository()->Get(name, 0);
    return m.ok() ? (*m)->version : -1;
  }
  static std::vector<int64_t> Served(const ModelLifecycle& lc) {
    std::vector<int64_t> out;
    for (const ModelHandle& m : lc.repository()->List()) {
      out.push_back(m->version);
    }
    return out;
  }

  testing::TempDir root_;
  RecordingObserver observer_;
  absl::Mutex log_mu_;
  std::string log_;
};

TEST_F(LifecycleTest, NewVersionReplacesOldAndRollbackServesBeforeRemoval) {
  WriteConfig(root_.path(), "m", R"({"num_heads": 2})");
  WriteVersion(root_.path(), "m", 1, Checkpoint(1));
  auto lc = Start();
  ASSERT_TRUE(lc.ok()) << lc.status();
  EXPECT_THAT((*lc)->startup_models(), ElementsAre("m"));
  EXPECT_EQ(Newest(**lc, "m"), 1);

  // An in-flight request holds version 1 across the swap.
  ModelHandle held = *(*lc)->repository()->Get("m", 1);
  std::weak_ptr<const Model> v1 = held;
  WriteVersion(root_.path(), "m", 2, Checkpoint(2));
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(2));  // 1 left routing at once
  EXPECT_FALSE(v1.expired());                 // ... but is alive while held
  auto status = (*lc)->Status("m");
  ASSERT_TRUE(status.ok());
  ASSERT_EQ((*status)[0].versions.size(), 2u);
  EXPECT_EQ((*status)[0].versions[0].state, VersionState::kUnloading);
  EXPECT_EQ((*status)[0].versions[1].state, VersionState::kReady);
  EXPECT_GT((*status)[0].versions[1].memory_bytes, 0);
  held.reset();
  EXPECT_TRUE(v1.expired());  // freed by the last holder

  // Rollback: removing the newest directory loads 1 again, and 2 leaves
  // only once 1 serves.
  fs::remove_all(root_.Join("m/2"));
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(1));
  const std::vector<std::string> events = observer_.events();
  auto at = [&](const std::string& e) {
    return std::find(events.begin(), events.end(), e) - events.begin();
  };
  EXPECT_LT(at("ready m/2"), at("unrouted m/1"));
  ASSERT_LT(at("unrouted m/2"), static_cast<long>(events.size()));
  EXPECT_LT(at("ready m/1") + 0, static_cast<long>(events.size()));
  // The second "ready m/1" (the rollback) comes before "unrouted m/2".
  long second_ready = -1;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i] == "ready m/1") second_ready = static_cast<long>(i);
  }
  EXPECT_LT(second_ready, at("unrouted m/2"));
  EXPECT_EQ(observer_.failures("m"), 0);
}

TEST_F(LifecycleTest, RefusedVersionsKeepTheServedOne) {
  WriteConfig(root_.path(), "m", R"({"num_heads": 2})");
  WriteVersion(root_.path(), "m", 1, Checkpoint(1));
  auto lc = Start();
  ASSERT_TRUE(lc.ok()) << lc.status();

  // Malformed.
  WriteVersion(root_.path(), "m", 2, "definitely not a safetensors file");
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(1));
  EXPECT_EQ(observer_.failures("m"), 1);
  EXPECT_THAT(log(), HasSubstr(root_.Join("m/2/model.safetensors")));
  EXPECT_THAT(log(), HasSubstr("still serving version(s) 1"));
  // The same bytes are not retried.
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_EQ(observer_.failures("m"), 1);
  auto status = (*lc)->Status("m");
  ASSERT_TRUE(status.ok());
  ASSERT_EQ((*status)[0].versions.size(), 2u);
  EXPECT_EQ((*status)[0].versions[1].state, VersionState::kFailed);
  EXPECT_THAT((*status)[0].versions[1].last_error,
              HasSubstr("model.safetensors"));

  // Truncated, then still being written (size changed since the last scan),
  // then complete: loaded.
  const std::string good = Checkpoint(3);
  WriteVersion(root_.path(), "m", 3, good.substr(0, good.size() / 3));
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(1));
  EXPECT_EQ(observer_.failures("m"), 2);
  WriteVersion(root_.path(), "m", 3, good);
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(1));
  EXPECT_EQ(observer_.failures("m"), 3);
  EXPECT_THAT(log(), HasSubstr("still being written"));
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(3));

  // A config.json that changed incompatibly: 3 keeps serving.
  WriteConfig(root_.path(), "m", R"({"num_heads": 3})");
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(3));
  EXPECT_EQ((*(*lc)->repository()->Get("m", 3))->attention.num_heads, 2);
  EXPECT_THAT(log(), HasSubstr("config.json changed"));
  // One that does not parse: same.
  WriteConfig(root_.path(), "m", R"({"num_heads": 2, "typo": 1})");
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(3));
  EXPECT_THAT(log(), HasSubstr("'typo'"));
  // Fixed: a compatible change reloads version 3 with the new config.
  WriteConfig(root_.path(), "m", R"({"num_heads": 2, "causal": true})");
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_THAT(Served(**lc), ElementsAre(3));
  EXPECT_TRUE((*(*lc)->repository()->Get("m", 3))->config.causal);
}

TEST_F(LifecycleTest, StartUpFailsFastUnlessToldOtherwise) {
  WriteConfig(root_.path(), "good", R"({"num_heads": 2})");
  WriteVersion(root_.path(), "good", 1, Checkpoint(1));
  WriteConfig(root_.path(), "bad", R"({"num_heads": 2})");
  WriteVersion(root_.path(), "bad", 1, "garbage");
  auto strict = Start();
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(strict.status().message()),
              HasSubstr(root_.Join("bad/1/model.safetensors")));
  auto lenient = Start(/*exit=*/false);
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_THAT((*lenient)->startup_models(), ElementsAre("good"));
  EXPECT_TRUE((*lenient)->ModelReady("good"));
  EXPECT_FALSE((*lenient)->ModelReady("bad"));
  auto status = (*lenient)->Status("bad");
  ASSERT_TRUE(status.ok());
  EXPECT_EQ((*status)[0].versions.at(0).state, VersionState::kFailed);
}

TEST_F(LifecycleTest, ExplicitUnloadAndLoad) {
  WriteConfig(root_.path(), "m",
              R"({"num_heads": 2, "version_policy": {"latest": 2}})");
  WriteVersion(root_.path(), "m", 1, Checkpoint(1));
  WriteVersion(root_.path(), "m", 2, Checkpoint(2));
  auto lc = Start();
  ASSERT_TRUE(lc.ok()) << lc.status();
  EXPECT_THAT(Served(**lc), ElementsAre(1, 2));
  ASSERT_TRUE((*lc)->UnloadModel("m").ok());
  EXPECT_THAT(Served(**lc), IsEmpty());
  EXPECT_EQ((*lc)->UnloadModel("m").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*lc)->ReloadRepository().ok());  // stays unloaded
  EXPECT_THAT(Served(**lc), IsEmpty());
  ASSERT_TRUE((*lc)->LoadModel("m").ok());
  EXPECT_THAT(Served(**lc), ElementsAre(1, 2));

  for (const char* bad : {"..", "../m", "/etc", "a/b", ".hidden", ""}) {
    EXPECT_EQ((*lc)->LoadModel(bad).code(), absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ((*lc)->UnloadModel(bad).code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_EQ((*lc)->LoadModel("nope").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*lc)->Status("nope").status().code(), absl::StatusCode::kNotFound);

  // A model directory that is a symlink out of the repository.
  testing::TempDir outside;
  WriteConfig(outside.path(), "x", R"({"num_heads": 2})");
  WriteVersion(outside.path(), "x", 1, Checkpoint(1));
  fs::create_directory_symlink(outside.Join("x"), root_.Join("escape"));
  absl::Status escape = (*lc)->LoadModel("escape");
  EXPECT_EQ(escape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(escape.message()),
              HasSubstr("out of the repository"));
  ASSERT_TRUE((*lc)->ReloadRepository().ok());
  EXPECT_FALSE((*lc)->ModelReady("escape"));
  // A checkpoint symlinked out of the repository is not read either.
  WriteConfig(root_.path(), "link", R"({"num_heads": 2})");
  fs::create_directories(root_.Join("link/1"));
  fs::create_symlink(outside.Join("x/1/model.safetensors"),
                     root_.Join("link/1/model.safetensors"));
  EXPECT_EQ((*lc)->LoadModel("link").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(LifecycleTest, SeveralLoadThreadsLoadEveryModel) {
  for (const char* name : {"a", "b", "c", "d"}) {
    WriteConfig(root_.path(), name,
                R"({"num_heads": 2, "version_policy": {"all": true}})");
    WriteVersion(root_.path(), name, 1, Checkpoint(1));
    WriteVersion(root_.path(), name, 2, Checkpoint(2));
  }
  ModelLifecycle::Options o;
  o.root = root_.path();
  o.load_threads = 3;
  absl::Mutex mu;
  int concurrent = 0, most = 0;
  o.prepare = [&](const Model&) {
    {
      absl::MutexLock l(&mu);
      most = std::max(most, ++concurrent);
    }
    usleep(20000);
    absl::MutexLock l(&mu);
    --concurrent;
    return absl::OkStatus();
  };
  o.log = [](const std::string&) {};
  auto lc = ModelLifecycle::Start(o);
  ASSERT_TRUE(lc.ok()) << lc.status();
  EXPECT_EQ((*lc)->repository()->List().size(), 8u);
  EXPECT_GT(most, 1);  // loads overlapped
  EXPECT_LE(most, 3);
  o.load_threads = 0;
  EXPECT_EQ(ModelLifecycle::Start(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(LifecycleTest, PollingPicksUpNewVersions) {
  WriteConfig(root_.path(), "m", R"({"num_heads": 2})");
  WriteVersion(root_.path(), "m", 1, Checkpoint(1));
  ModelLifecycle::Options o;
  o.root = root_.path();
  o.poll_interval = absl::Milliseconds(50);
  o.log = [](const std::string&) {};
  auto lc = ModelLifecycle::Start(o);
  ASSERT_TRUE(lc.ok()) << lc.status();
  WriteVersion(root_.path(), "m", 2, Checkpoint(2));
  for (int i = 0; i < 400 && Newest(**lc, "m") != 2; ++i) usleep(10000);
  EXPECT_EQ(Newest(**lc, "m"), 2);
  for (int i = 0; i < 400 && Served(**lc).size() != 1; ++i) usleep(10000);
  EXPECT_THAT(Served(**lc), ElementsAre(2));
  (*lc)->Stop();
}

}  // namespace
}  // namespace attn::server
