// The admin operations of ModelLifecycle (ReloadRepository, LoadModel,
// UnloadModel, Status): see model_lifecycle.h.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/models/model_lifecycle.h"  // IWYU pragma: associated

namespace attn::server {

absl::Status ModelLifecycle::ReloadRepository() {
  absl::MutexLock scan_lock(&scan_mu_);
  absl::StatusOr<std::vector<ModelDirScan>> scan =
      ScanRepository(options_.root);
  if (!scan.ok()) return scan.status();
  absl::MutexLock lock(&mu_);
  ApplyScanLocked(*scan, /*startup=*/false);
  WaitForLoadsLocked("");
  return absl::OkStatus();
}

absl::Status ModelLifecycle::LoadModel(const std::string& name) {
  if (absl::Status s = ValidateModelName(name); !s.ok()) return s;
  absl::MutexLock scan_lock(&scan_mu_);
  absl::StatusOr<ModelDirScan> scan = ScanModelDir(options_.root, name);
  if (!scan.ok()) return scan.status();
  absl::MutexLock lock(&mu_);
  ModelEntry& e = models_[name];
  e.unloaded = false;
  e.last_error.clear();
  e.bad_config.clear();
  e.reported_problems.clear();
  for (auto& [v, ve] : e.versions) {  // an explicit load retries failures
    ve.failed_file = CheckpointFile();
    ve.failed_config.clear();
  }
  e.last_seen = scan->versions;  // an explicit load does not wait a scan
  std::vector<std::string> problems =
      ReconcileLocked(name, &*scan, /*startup=*/false);
  WaitForLoadsLocked(name);
  bool ready = false;
  for (const auto& [v, ve] : e.versions) ready |= ve.served != nullptr;
  if (ready && e.last_error.empty()) return absl::OkStatus();
  std::string why =
      !e.last_error.empty() ? e.last_error
      : !problems.empty()   ? problems.front()
      : !scan->problems.empty()
          ? scan->problems.front()
          : absl::StrCat("version_policy ", e.config.version_policy.ToString(),
                         " selects none of the version "
                         "directories of ",
                         scan->dir);
  if (ready) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model '", name, "' is serving, but a version was refused: ", why));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("model '", name, "' could not be loaded: ", why));
}

absl::Status ModelLifecycle::UnloadModel(const std::string& name) {
  if (absl::Status s = ValidateModelName(name); !s.ok()) return s;
  absl::MutexLock scan_lock(&scan_mu_);
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  bool loaded = false;
  if (it != models_.end()) {
    for (const auto& [v, ve] : it->second.versions) {
      loaded |= ve.served != nullptr || ve.loading;
    }
  }
  if (!loaded) {
    return absl::NotFoundError(absl::StrCat(
        "model '", name, "' is not loaded (ModelStatus lists the models)"));
  }
  ModelEntry& e = it->second;
  e.unloaded = true;
  ++e.generation;  // loads still running are dropped when they finish
  e.wanted.clear();
  jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(),
                             [&](const LoadJob& job) {
                               if (job.name != name) return false;
                               // (the repository is told below)
                               e.versions[job.version].loading = false;
                               return true;
                             }),
              jobs_.end());
  // A load still running is dropped when it finishes; meanwhile requests
  // get NOT_FOUND (unloaded), not UNAVAILABLE (loading).
  for (const auto& [v, ve] : e.versions)
    repository_->SetLoading(name, v, false);
  std::vector<int64_t> served;
  for (const auto& [v, ve] : e.versions) {
    if (ve.served) served.push_back(v);
  }
  for (int64_t v : served) UnrouteLocked(name, &e, v);
  Log(absl::StrCat("model '", name,
                   "' unloaded by UnloadModel; it stays unloaded until "
                   "LoadModel"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ModelStatusInfo>> ModelLifecycle::Status(
    const std::string& name) const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelStatusInfo> out;
  for (const auto& [n, e] : models_) {
    if (!name.empty() && n != name) continue;
    ModelStatusInfo info;
    info.name = n;
    info.version_policy = e.config.version_policy.ToString();
    info.last_error = e.last_error;
    info.unloaded = e.unloaded;
    for (const auto& [v, ve] : e.versions) {
      if (!ve.served && !ve.loading && ve.last_error.empty()) continue;
      VersionStatus s;
      s.version = v;
      s.state = ve.served    ? VersionState::kReady
                : ve.loading ? VersionState::kLoading
                             : VersionState::kFailed;
      s.last_error = ve.last_error;
      s.loaded_at = ve.loaded_at;
      s.load_duration = ve.load_duration;
      s.memory_bytes = ve.served ? ve.served->weight_bytes : 0;
      info.versions.push_back(std::move(s));
    }
    for (const Retired& r : e.retiring) {
      if (r.model.expired()) continue;
      VersionStatus s;
      s.version = r.version;
      s.state = VersionState::kUnloading;
      s.memory_bytes = r.memory_bytes;
      info.versions.push_back(std::move(s));
    }
    std::stable_sort(info.versions.begin(), info.versions.end(),
                     [](const VersionStatus& a, const VersionStatus& b) {
                       return a.version < b.version;
                     });
    out.push_back(std::move(info));
  }
  if (!name.empty() && out.empty()) {
    if (absl::Status s = ValidateModelName(name); !s.ok()) return s;
    return absl::NotFoundError(
        absl::StrCat("model '", name,
                     "' is not in the repository (ModelStatus without a "
                     "name lists the models)"));
  }
  return out;
}

bool ModelLifecycle::ModelReady(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return false;
  for (const auto& [v, ve] : it->second.versions) {
    if (ve.served) return true;
  }
  return false;
}

}  // namespace attn::server
