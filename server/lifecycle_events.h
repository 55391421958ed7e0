// Fans ModelLifecycle's events out to the metrics and to per-model health
// (grpc.health.v1 "attn.v1.AttentionService/<model>"): a model is ready
// while at least one of its versions is routed.
//
//   LifecycleEvents events(metrics);          // metrics may be null
//   lifecycle_options.observer = &events;
//   ... server started ...
//   events.AttachHealth(health);              // publishes what is ready now
//
// Thread-safety: every method may be called from any thread concurrently.
// Ownership: `metrics` and the attached health are not owned and must
// outlive every event (stop the lifecycle first).
#ifndef ATTNSERVE_SERVER_LIFECYCLE_EVENTS_H_
#define ATTNSERVE_SERVER_LIFECYCLE_EVENTS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/api/health_status.h"
#include "server/models/lifecycle_observer.h"
#include "server/observability/metrics.h"

namespace attn::server {

class LifecycleEvents final : public LifecycleObserver {
 public:
  explicit LifecycleEvents(ServerMetrics* metrics) : metrics_(metrics) {}

  // From now on per-model readiness goes to `health` (may be null); sets
  // every model that is ready now.
  void AttachHealth(HealthStatus* health) {
    absl::MutexLock lock(&mu_);
    health_ = health;
    if (health_ == nullptr) return;
    for (const auto& [name, versions] : routed_) {
      health_->SetModelReady(name, !versions.empty());
    }
  }

  void VersionReady(const Model& model) override {
    if (metrics_ != nullptr) metrics_->VersionReady(model);
    Update(model.name, model.version, true);
  }
  void VersionUnrouted(const std::string& name, int64_t version) override {
    if (metrics_ != nullptr) metrics_->VersionUnrouted(name, version);
    Update(name, version, false);
  }
  void VersionFreed(const std::string& name, int64_t version) override {
    if (metrics_ != nullptr) metrics_->VersionFreed(name, version);
  }
  void LoadSucceeded(const std::string& name, absl::Duration took) override {
    if (metrics_ != nullptr) metrics_->LoadSucceeded(name, took);
  }
  void LoadFailed(const std::string& name) override {
    if (metrics_ != nullptr) metrics_->LoadFailed(name);
  }

 private:
  void Update(const std::string& name, int64_t version, bool routed) {
    absl::MutexLock lock(&mu_);
    std::set<int64_t>& versions = routed_[name];
    if (routed) {
      versions.insert(version);
    } else {
      versions.erase(version);
    }
    if (health_ != nullptr) health_->SetModelReady(name, !versions.empty());
  }

  ServerMetrics* const metrics_;  // may be null
  absl::Mutex mu_;
  HealthStatus* health_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, std::set<int64_t>> routed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_LIFECYCLE_EVENTS_H_
