// What ModelLifecycle reports as versions load, serve and go away (the
// Prometheus metrics implement it; see server/observability/metrics.h).
//
// Thread-safety: implementations must accept calls from any thread,
// concurrently (load threads, the housekeeping thread, admin calls).
#ifndef ATTNSERVE_SERVER_MODELS_LIFECYCLE_OBSERVER_H_
#define ATTNSERVE_SERVER_MODELS_LIFECYCLE_OBSERVER_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "server/models/model_repository.h"

namespace attn::server {

class LifecycleObserver {
 public:
  virtual ~LifecycleObserver() = default;
  // `model` was published: it serves from now on (ready = 1, memory set).
  virtual void VersionReady(const Model& model) = 0;
  // (name, version) left routing (ready = 0); its memory is still held
  // until its in-flight requests finish.
  virtual void VersionUnrouted(const std::string& name, int64_t version) = 0;
  // The last handle of (name, version) was dropped and its memory freed.
  virtual void VersionFreed(const std::string& name, int64_t version) = 0;
  // A load (read, pack and warm-up) of `name` succeeded after `took`.
  virtual void LoadSucceeded(const std::string& name, absl::Duration took) = 0;
  // A version or config.json of `name` was refused.
  virtual void LoadFailed(const std::string& name) = 0;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_LIFECYCLE_OBSERVER_H_
