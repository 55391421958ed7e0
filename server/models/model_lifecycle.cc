#include "server/models/model_lifecycle.h"

#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attn::server {
namespace {

// How often freed versions are looked for while some are unloading.
constexpr absl::Duration kReapInterval = absl::Milliseconds(20);

std::string Label(const std::string& name, int64_t version) {
  return absl::StrCat("model '", name, "' version ", version);
}

bool Contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

const char* VersionStateName(VersionState state) {
  switch (state) {
    case VersionState::kLoading:
      return "LOADING";
    case VersionState::kReady:
      return "READY";
    case VersionState::kUnloading:
      return "UNLOADING";
    case VersionState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

ModelLifecycle::ModelLifecycle(const Options& options)
    : options_(options), repository_(std::make_shared<ModelRepository>()) {}

ModelLifecycle::~ModelLifecycle() { Stop(); }

void ModelLifecycle::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << absl::StrCat("attn_server: ", line, "\n");  // one write
  }
}

absl::StatusOr<std::unique_ptr<ModelLifecycle>> ModelLifecycle::Start(
    const Options& options) {
  if (options.load_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model_load_threads is ",
                                                   options.load_threads,
                                                   "; expected at least 1"));
  }
  if (options.poll_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "repository_poll_s is negative; expected 0 (off) or a period");
  }
  absl::StatusOr<std::vector<ModelDirScan>> scan = ScanRepository(options.root);
  if (!scan.ok()) return scan.status();

  std::unique_ptr<ModelLifecycle> lc(new ModelLifecycle(options));
  for (int i = 0; i < options.load_threads; ++i) {
    lc->load_threads_.emplace_back([self = lc.get()] { self->LoadLoop(); });
  }
  std::vector<std::string> problems;
  {
    absl::MutexLock scan_lock(&lc->scan_mu_);
    absl::MutexLock lock(&lc->mu_);
    problems = lc->ApplyScanLocked(*scan, /*startup=*/true);
    lc->WaitForLoadsLocked("");
    for (const auto& [name, entry] : lc->models_) {
      bool ready = false;
      for (const auto& [v, ve] : entry.versions) ready |= ve.served != nullptr;
      if (ready) lc->startup_models_.push_back(name);
      if (!entry.last_error.empty()) problems.push_back(entry.last_error);
    }
  }
  if (options.exit_on_load_error && !problems.empty()) {
    lc->Stop();
    return absl::InvalidArgumentError(problems.front());
  }
  if (options.exit_on_load_error && lc->startup_models_.empty()) {
    lc->Stop();
    return absl::InvalidArgumentError(absl::StrCat(
        options.root,
        ": model repository is empty (expected <model>/config.json and "
        "<model>/<version>/model.safetensors)"));
  }
  lc->housekeeper_ =
      std::thread([self = lc.get()] { self->HousekeepingLoop(); });
  return lc;
}

void ModelLifecycle::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (const LoadJob& job : jobs_) {
      auto it = models_.find(job.name);
      if (it != models_.end()) it->second.versions[job.version].loading = false;
    }
    jobs_.clear();
    load_cv_.SignalAll();
    housekeeping_cv_.SignalAll();
    done_cv_.SignalAll();
  }
  for (std::thread& t : load_threads_) {
    if (t.joinable()) t.join();
  }
  load_threads_.clear();
  if (housekeeper_.joinable()) housekeeper_.join();
}

std::vector<std::string> ModelLifecycle::ApplyScanLocked(
    const std::vector<ModelDirScan>& scan, bool startup) {
  std::vector<std::string> problems;
  std::set<std::string> present;
  for (const ModelDirScan& dir : scan) {
    present.insert(dir.name);
    std::vector<std::string> p = ReconcileLocked(dir.name, &dir, startup);
    problems.insert(problems.end(), p.begin(), p.end());
  }
  std::vector<std::string> gone;
  for (const auto& [name, entry] : models_) {
    if (present.count(name) == 0) gone.push_back(name);
  }
  for (const std::string& name : gone) ReconcileLocked(name, nullptr, startup);
  return problems;
}

std::vector<std::string> ModelLifecycle::ReconcileLocked(
    const std::string& name, const ModelDirScan* scan, bool startup) {
  std::vector<std::string> problems;
  ModelEntry& e = models_[name];
  if (e.unloaded) return problems;
  if (scan == nullptr) {  // the model's directory is gone
    e.last_seen.clear();
    e.unstable.clear();
    PlanLocked(name, &e);
    return problems;
  }
  // config.json: a refused one keeps the served versions as they are.
  std::string config_problem;
  if (!scan->config_error.ok()) {
    config_problem = std::string(scan->config_error.message());
  } else if (!e.has_config || scan->config_text != e.config_text) {
    absl::StatusOr<ModelConfig> config =
        ParseModelConfig(scan->config_text, scan->config_path);
    if (config.ok()) {
      e.config = *std::move(config);
      e.config_text = scan->config_text;
      e.has_config = true;
      e.bad_config.clear();
    } else {
      config_problem = std::string(config.status().message());
    }
  }
  if (!config_problem.empty()) {
    if (e.bad_config != config_problem) {
      e.bad_config = config_problem;
      RefuseLocked(name, &e, config_problem);
    }
    problems.push_back(config_problem);
    return problems;
  }
  for (const std::string& problem : scan->problems) {
    if (startup) {
      problems.push_back(problem);
      RefuseLocked(name, &e, problem);
    } else if (e.reported_problems.insert(problem).second) {
      Log(absl::StrCat("ignoring ", problem));
    }
  }
  // A checkpoint whose size or mtime changed since the last scan is still
  // being written: not a candidate until two scans agree.
  e.unstable.clear();
  for (const auto& [version, file] : scan->versions) {
    auto seen = e.last_seen.find(version);
    if (seen == e.last_seen.end() || seen->second == file) continue;
    e.unstable.insert(version);
    RefuseLocked(name, &e,
                 absl::StrCat(file.path, ": still being written (",
                              seen->second.size == file.size
                                  ? "its mtime changed"
                                  : absl::StrCat("size ", seen->second.size,
                                                 " -> ", file.size, " bytes"),
                              " since the last scan); ", Label(name, version),
                              " is retried on the next scan"));
  }
  e.last_seen = scan->versions;
  PlanLocked(name, &e);
  return problems;
}

void ModelLifecycle::PlanLocked(const std::string& name, ModelEntry* e) {
  if (e->unloaded) return;
  std::vector<int64_t> candidates;
  if (e->has_config) {
    for (const auto& [version, file] : e->last_seen) {
      auto it = e->versions.find(version);
      const bool served = it != e->versions.end() && it->second.served;
      if (e->unstable.count(version) != 0 && !served) continue;
      if (it != e->versions.end() && !served &&
          it->second.failed_file == file &&
          it->second.failed_config == e->config_text) {
        continue;  // known bad; retried once the file or config changes
      }
      candidates.push_back(version);
    }
  }
  e->wanted = e->config.version_policy.Select(candidates);
  for (int64_t version : e->wanted) {
    VersionEntry& ve = e->versions[version];
    const CheckpointFile& file = e->last_seen.at(version);
    if (ve.loading || e->unstable.count(version) != 0) continue;
    if (ve.served && ve.served_file == file &&
        ve.served_config == e->config_text) {
      continue;  // up to date
    }
    if (ve.failed_file == file && ve.failed_config == e->config_text) continue;
    ve.loading = true;
    LoadJob job;
    job.name = name;
    job.version = version;
    job.file = file;
    job.config_text = e->config_text;
    job.config = e->config;
    job.generation = e->generation;
    jobs_.push_back(std::move(job));
    load_cv_.Signal();
  }
  RetireLocked(name, e);
}

void ModelLifecycle::RetireLocked(const std::string& name, ModelEntry* e) {
  // Availability first: nothing leaves routing while a wanted version is
  // not ready yet.
  for (int64_t version : e->wanted) {
    if (!e->versions[version].served) return;
  }
  std::vector<int64_t> unwanted;
  for (const auto& [version, ve] : e->versions) {
    if (ve.served && !Contains(e->wanted, version)) unwanted.push_back(version);
  }
  for (int64_t version : unwanted) UnrouteLocked(name, e, version);
  // Forget versions that are gone from disk and hold nothing.
  for (auto it = e->versions.begin(); it != e->versions.end();) {
    if (!it->second.served && !it->second.loading &&
        e->last_seen.count(it->first) == 0) {
      it = e->versions.erase(it);
    } else {
      ++it;
    }
  }
}

void ModelLifecycle::UnrouteLocked(const std::string& name, ModelEntry* e,
                                   int64_t version) {
  VersionEntry& ve = e->versions[version];
  ModelHandle handle = repository_->Remove(name, version);
  if (handle == nullptr) handle = ve.served;
  ve.served = nullptr;
  if (handle == nullptr) return;
  Retired r;
  r.version = version;
  r.memory_bytes = handle->weight_bytes;
  r.model = handle;
  e->retiring.push_back(std::move(r));
  if (options_.observer != nullptr) {
    options_.observer->VersionUnrouted(name, version);
  }
  Log(absl::StrCat("unloading ", Label(name, version),
                   ": out of routing; its memory is freed when its "
                   "in-flight requests finish",
                   e->wanted.empty()
                       ? ""
                       : absl::StrCat(" (serving version(s) ",
                                      absl::StrJoin(e->wanted, ", "), ")")));
  housekeeping_cv_.Signal();
}

void ModelLifecycle::RefuseLocked(const std::string& name, ModelEntry* e,
                                  const std::string& message) {
  e->last_error = message;
  std::vector<int64_t> served;
  for (const auto& [version, ve] : e->versions) {
    if (ve.served) served.push_back(version);
  }
  Log(absl::StrCat("refused: ", message,
                   served.empty() ? ""
                                  : absl::StrCat("; still serving version(s) ",
                                                 absl::StrJoin(served, ", "),
                                                 " of model '", name, "'")));
  if (options_.observer != nullptr) options_.observer->LoadFailed(name);
}

bool ModelLifecycle::AnyLoadingLocked(const std::string& name) const {
  for (const auto& [n, e] : models_) {
    if (!name.empty() && n != name) continue;
    for (const auto& [v, ve] : e.versions) {
      if (ve.loading) return true;
    }
  }
  return false;
}

void ModelLifecycle::WaitForLoadsLocked(const std::string& name) {
  while (!stopping_ && AnyLoadingLocked(name)) done_cv_.Wait(&mu_);
}

void ModelLifecycle::LoadLoop() {
  if (options_.load_thread_init) options_.load_thread_init();
  while (true) {
    LoadJob job;
    {
      absl::MutexLock lock(&mu_);
      while (jobs_.empty() && !stopping_) load_cv_.Wait(&mu_);
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    RunLoad(job);
  }
}

void ModelLifecycle::RunLoad(const LoadJob& job) {
  const absl::Time start = absl::Now();
  absl::StatusOr<ModelHandle> model =
      server::LoadModel(job.name, job.version, job.config, job.file.path);
  absl::Status status = model.status();
  if (status.ok()) {
    // The file must not have changed while it was read.
    struct stat st;
    const int64_t mtime_ns =
        ::stat(job.file.path.c_str(), &st) == 0
            ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                  st.st_mtim.tv_nsec
            : -1;
    if (mtime_ns != job.file.mtime_ns ||
        static_cast<int64_t>(st.st_size) != job.file.size) {
      status = absl::InvalidArgumentError(absl::StrCat(
          job.file.path,
          ": still being written (its size or mtime changed while it was "
          "read); retried once it stops changing"));
    }
  }
  if (status.ok() && options_.prepare) status = options_.prepare(**model);
  const absl::Duration took = absl::Now() - start;

  ModelHandle discard;  // dropped after the lock is released
  absl::MutexLock lock(&mu_);
  auto it = models_.find(job.name);
  if (it == models_.end()) return;  // unreachable: entries with loads stay
  ModelEntry& e = it->second;
  VersionEntry& ve = e.versions[job.version];
  ve.loading = false;
  done_cv_.SignalAll();
  if (stopping_ || job.generation != e.generation) {
    if (model.ok()) discard = *model;
    return;
  }
  if (!status.ok()) {
    ve.failed_file = job.file;
    ve.failed_config = job.config_text;
    std::string message(status.message());
    if (ve.served && ve.served_config != job.config_text) {
      message = absl::StrCat(message,
                             " (config.json changed: the new config "
                             "does not fit this checkpoint)");
    }
    ve.last_error = message;
    RefuseLocked(job.name, &e,
                 absl::StrCat(Label(job.name, job.version), ": ", message));
  } else if (!Contains(e.wanted, job.version)) {
    discard = *model;  // no longer wanted (removed meanwhile)
  } else {
    ModelHandle previous = repository_->Publish(*model);
    if (previous != nullptr) {  // reloaded in place (changed file/config)
      Retired r;
      r.version = job.version;
      r.memory_bytes = previous->weight_bytes;
      r.model = previous;
      e.retiring.push_back(std::move(r));
      housekeeping_cv_.Signal();
    }
    ve.served = *model;
    ve.served_file = job.file;
    ve.served_config = job.config_text;
    ve.loaded_at = absl::Now();
    ve.load_duration = took;
    ve.last_error.clear();
    if (options_.observer != nullptr) {
      options_.observer->LoadSucceeded(job.name, took);
      options_.observer->VersionReady(**model);
    }
    Log(absl::StrCat("loaded ", Label(job.name, job.version), " (d_model ",
                     (*model)->attention.d_model, ", ",
                     (*model)->attention.num_heads, " heads, ",
                     (*model)->attention.num_kv_heads, " kv heads, ",
                     (*model)->config.compute_dtype, "; ",
                     (*model)->kernel->ImplementationSummary(), ") from ",
                     job.file.path, " in ", absl::ToInt64Milliseconds(took),
                     " ms, warm-up included; ready"));
  }
  PlanLocked(job.name, &e);
}

bool ModelLifecycle::ReapLocked() {
  bool freed = false;
  for (auto& [name, e] : models_) {
    for (auto it = e.retiring.begin(); it != e.retiring.end();) {
      if (!it->model.expired()) {
        ++it;
        continue;
      }
      freed = true;
      Log(absl::StrCat("freed ", Label(name, it->version), " (",
                       it->memory_bytes >> 20, " MiB of weights)"));
      auto v = e.versions.find(it->version);
      const bool still_served = v != e.versions.end() && v->second.served;
      if (options_.observer != nullptr && !still_served) {
        options_.observer->VersionFreed(name, it->version);
      }
      it = e.retiring.erase(it);
    }
  }
  // Forget models that are gone and hold nothing.
  for (auto it = models_.begin(); it != models_.end();) {
    const ModelEntry& e = it->second;
    if (e.versions.empty() && e.retiring.empty() && e.last_seen.empty() &&
        !e.unloaded && e.last_error.empty()) {
      it = models_.erase(it);
    } else {
      ++it;
    }
  }
  return freed;
}

void ModelLifecycle::HousekeepingLoop() {
  absl::Time next_poll = absl::Now() + options_.poll_interval;
  while (true) {
    bool freed = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      bool retiring = false;
      for (const auto& [name, e] : models_) retiring |= !e.retiring.empty();
      absl::Duration wait = absl::InfiniteDuration();
      if (retiring) wait = kReapInterval;
      if (options_.poll_interval > absl::ZeroDuration()) {
        wait = std::min(
            wait, std::max(absl::ZeroDuration(), next_poll - absl::Now()));
      }
      housekeeping_cv_.WaitWithTimeout(&mu_, wait);
      if (stopping_) return;
      freed = ReapLocked();
    }
    // Returns the freed weights to the system (glibc keeps freed heap
    // memory otherwise).
    if (freed) ::malloc_trim(0);
    if (options_.poll_interval > absl::ZeroDuration() &&
        absl::Now() >= next_poll) {
      absl::MutexLock scan_lock(&scan_mu_);
      absl::StatusOr<std::vector<ModelDirScan>> scan =
          ScanRepository(options_.root);
      if (scan.ok()) {
        absl::MutexLock lock(&mu_);
        if (!stopping_) ApplyScanLocked(*scan, /*startup=*/false);
      } else {
        Log(absl::StrCat("repository scan failed, keeping every model: ",
                         scan.status().message()));
      }
      next_poll = absl::Now() + options_.poll_interval;
    }
  }
}

}  // namespace attn::server
