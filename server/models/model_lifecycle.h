// Loads, reloads and unloads the versions of a model repository while the
// server runs: version policy, background loading, reference-counted
// unloading, explicit load/unload and per-version status.
//
//   ModelLifecycle::Options options;
//   options.root = "/models";
//   options.poll_interval = absl::Seconds(5);     // --repository_poll_s
//   options.prepare = [&](const Model& m) { return WarmUp(m, threads); };
//   auto lifecycle = ModelLifecycle::Start(options);  // loads, waits
//   std::shared_ptr<const ModelRepository> routes = (*lifecycle)->repository();
//
// Rules (see README "Model lifecycle"):
//   * Each scan computes, per model, the candidate versions (version
//     directories with a checkpoint that is not known to be bad) and the
//     wanted ones (config.json's version_policy over the candidates).
//   * A wanted version that is not loaded, or whose checkpoint or
//     config.json changed since it was loaded, is loaded on a load thread:
//     read, packed, prepared (warmed up), and only then published. Loads
//     never hold the lifecycle's lock, and the executor never waits on one.
//   * A loaded version that is no longer wanted leaves routing only once
//     every wanted version of its model is ready, so a rollback (removing
//     the newest directories) serves the previous version before the
//     removed one stops. It leaves routing at once then; its memory is freed
//     when its in-flight requests drop their handles, after which
//     malloc_trim returns it to the system.
//   * A refused version (malformed or truncated file, a file still being
//     written -- its size or mtime changed since the last scan or during the
//     load --, a config.json that does not parse or does not fit the
//     checkpoint, a failed warm-up) is logged naming the file and the
//     problem and counted (LoadFailed); the served version keeps serving; the
//     same bytes are not retried, a changed file is.
//   * At start-up, with exit_on_load_error, any refusal fails Start().
//
// Thread-safety: all public methods may be called concurrently from any
// thread. Admin calls (Reload, LoadModel, UnloadModel) block until the loads
// they started are done. The destructor stops the threads (a running load
// finishes first).
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_LIFECYCLE_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_LIFECYCLE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/models/lifecycle_observer.h"
#include "server/models/model_config.h"
#include "server/models/model_repository.h"
#include "server/models/repository_scan.h"

namespace attn::server {

enum class VersionState { kLoading, kReady, kUnloading, kFailed };

// "LOADING", "READY", "UNLOADING", "FAILED".
const char* VersionStateName(VersionState state);

// One version of a model as ModelStatus reports it. A plain value.
struct VersionStatus {
  int64_t version = 0;
  VersionState state = VersionState::kLoading;
  std::string last_error;  // the last refusal of this version, if any
  absl::Time loaded_at = absl::InfinitePast();  // when it turned READY
  absl::Duration load_duration = absl::ZeroDuration();
  int64_t memory_bytes = 0;  // weights held (READY and UNLOADING)
};

struct ModelStatusInfo {
  std::string name;
  std::string version_policy;  // e.g. "latest 1"
  std::string last_error;      // the model's last refusal (any version)
  bool unloaded = false;       // UnloadModel() was called, LoadModel() not
  std::vector<VersionStatus> versions;  // by version; UNLOADING ones too
};

class ModelLifecycle {
 public:
  struct Options {
    // The repository directory. REQUIRED.
    std::string root;
    // Threads that load versions in the background. Default: 1 (a load
    // uses the cores too; more threads only help when many models change
    // at once). REQUIRES: >= 1.
    int load_threads = 1;
    // How often the repository is rescanned. Zero: never (only Reload()).
    // Default: zero.
    absl::Duration poll_interval = absl::ZeroDuration();
    // At start-up, a refused model or version fails Start(). When false it
    // is logged and left FAILED, and the server starts without it.
    // Default: true.
    bool exit_on_load_error = true;
    // Runs on a load thread after a version loaded and before it is
    // published (attn_server: the warm-up). An error refuses the version.
    // Default: none.
    std::function<absl::Status(const Model&)> prepare;
    // Runs first on every load thread (attn_server: lowers its priority
    // below the executor's, so loads yield the cores to serving). Default:
    // none.
    std::function<void()> load_thread_init;
    // Not owned; must outlive the lifecycle. Default: nothing reported.
    LifecycleObserver* observer = nullptr;
    // One line per event, without a trailing newline. Default: stderr with
    // an "attn_server: " prefix.
    std::function<void(const std::string&)> log;
  };

  // Scans the repository, loads the wanted versions (on the load threads)
  // and waits for them, then starts polling. Errors: NOT_FOUND (no root),
  // INVALID_ARGUMENT naming the file (with exit_on_load_error: any refusal,
  // or an empty repository).
  static absl::StatusOr<std::unique_ptr<ModelLifecycle>> Start(
      const Options& options);

  ~ModelLifecycle();
  ModelLifecycle(const ModelLifecycle&) = delete;
  ModelLifecycle& operator=(const ModelLifecycle&) = delete;

  // The routing table the service reads. Never null.
  std::shared_ptr<const ModelRepository> repository() const {
    return repository_;
  }

  // Models that had a ready version at the end of Start().
  const std::vector<std::string>& startup_models() const {
    return startup_models_;
  }

  // Rescans the whole repository now and waits for the loads it started.
  // Errors: those of the scan (the repository disappeared).
  absl::Status ReloadRepository();

  // Clears an UnloadModel() of `name`, scans its directory and waits for its
  // loads. Errors: INVALID_ARGUMENT (bad name, path leaving the
  // repository), NOT_FOUND (no such directory), FAILED_PRECONDITION (no
  // version could be loaded: the message has the refusal).
  absl::Status LoadModel(const std::string& name);

  // Takes every version of `name` out of routing (memory freed as their
  // requests finish) and keeps it unloaded, polls included, until
  // LoadModel(). Errors: INVALID_ARGUMENT (bad name), NOT_FOUND (not
  // loaded).
  absl::Status UnloadModel(const std::string& name);

  // Status of every model known (loaded, loading, failed or unloading), or
  // of one. Errors: NOT_FOUND for an unknown name.
  absl::StatusOr<std::vector<ModelStatusInfo>> Status(
      const std::string& name = "") const;

  // True when `name` has a ready version.
  bool ModelReady(const std::string& name) const;

  // Stops polling and the load threads (a running load finishes; queued
  // ones are dropped). Idempotent.
  void Stop();

  // Implementation details follow. API users need not read.
 private:
  struct VersionEntry {
    ModelHandle served;          // READY: the handle in routing
    CheckpointFile served_file;  // what `served` was loaded from
    std::string served_config;   // config.json text it was loaded with
    absl::Time loaded_at = absl::InfinitePast();
    absl::Duration load_duration = absl::ZeroDuration();
    bool loading = false;
    // The last refused attempt: not retried while file and config match.
    CheckpointFile failed_file;
    std::string failed_config;
    std::string last_error;
  };
  struct Retired {
    int64_t version = 0;
    std::weak_ptr<const Model> model;
    int64_t memory_bytes = 0;
  };
  struct ModelEntry {
    std::map<int64_t, VersionEntry> versions;
    std::vector<Retired> retiring;
    std::map<int64_t, CheckpointFile> last_seen;  // previous scan
    std::set<int64_t> unstable;  // changed between the last two scans
    std::vector<int64_t> wanted;
    std::string config_text;  // last config.json that parsed
    ModelConfig config;
    bool has_config = false;
    std::string bad_config;  // text of the last refused config.json
    std::string last_error;
    std::set<std::string> reported_problems;
    bool unloaded = false;
    int64_t generation = 0;  // bumped by UnloadModel: stale loads dropped
  };
  struct LoadJob {
    std::string name;
    int64_t version = 0;
    CheckpointFile file;
    std::string config_text;
    ModelConfig config;
    int64_t generation = 0;
  };

  explicit ModelLifecycle(const Options& options);

  // Applies one scan of a model (or its disappearance, scan == nullptr).
  // Returns the problems found (start-up treats them as errors).
  std::vector<std::string> ReconcileLocked(const std::string& name,
                                           const ModelDirScan* scan,
                                           bool startup)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reconciles every model of `scan` and the ones that vanished.
  std::vector<std::string> ApplyScanLocked(
      const std::vector<ModelDirScan>& scan, bool startup)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Computes the wanted versions from last_seen, queues the loads they
  // need and retires what is no longer wanted.
  void PlanLocked(const std::string& name, ModelEntry* entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unroutes the loaded versions of `name` no longer wanted, once every
  // wanted one is ready.
  void RetireLocked(const std::string& name, ModelEntry* entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnrouteLocked(const std::string& name, ModelEntry* entry,
                     int64_t version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records a refusal: logs it, counts it, remembers it.
  void RefuseLocked(const std::string& name, ModelEntry* entry,
                    const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AnyLoadingLocked(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WaitForLoadsLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops freed versions from `retiring`; true if any was freed.
  bool ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void LoadLoop();
  void RunLoad(const LoadJob& job);
  void HousekeepingLoop();
  void Log(const std::string& line) const;

  const Options options_;
  const std::shared_ptr<ModelRepository> repository_;
  std::vector<std::string> startup_models_;

  mutable absl::Mutex scan_mu_;  // serialises scans (poller and admin)
  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(scan_mu_);
  absl::CondVar load_cv_;          // a job queued, or stopping
  absl::CondVar done_cv_;          // a load finished
  absl::CondVar housekeeping_cv_;  // something retired, or stopping
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, ModelEntry> models_ ABSL_GUARDED_BY(mu_);
  std::deque<LoadJob> jobs_ ABSL_GUARDED_BY(mu_);

  absl::Mutex stop_mu_;
  std::vector<std::thread> load_threads_;
  std::thread housekeeper_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_LIFECYCLE_H_
