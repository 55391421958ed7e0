// Prometheus metrics of attn_server: the metric families, the series of
// every model version (made when it first loads, kept afterwards) and the
// per-request bookkeeping the service uses. Exposition is MetricsEndpoint's
// job.
//
//   ServerMetrics metrics(repository->List());
//   Batcher::Options options;
//   options.observer = &metrics;            // queue depth, queue/compute time,
//                                           // batch sizes, tokens
//   RequestMetrics r = metrics.StartRequest();  // in the gRPC handler
//   r.SetModel(request.model());
//   ...
//   r.Finish(status.code(), /*reached_executor=*/true);  // exactly once
//
// Metric set (see docs/notes/metrics.md for the full table):
//   attn_requests_total{model,code}               counter
//   attn_request_duration_seconds{model}          histogram
//   attn_queue_duration_seconds{model}            histogram
//   attn_compute_duration_seconds{model}          histogram (per kernel call)
//   attn_batch_requests{model}, attn_batch_tokens{model}
//                                                 histograms (per kernel call)
//   attn_tokens_total{model}                      counter
//   attn_inflight_requests                        gauge
//   attn_queue_depth{model,version}, attn_queue_capacity{model,version}
//                                                 gauges
//   attn_model_ready{model,version}               gauge (1 ready, 0 not)
//   attn_model_load_failures_total{model}         counter
//   attn_model_load_duration_seconds{model}       histogram
//   attn_model_memory_bytes{model,version}        gauge
//   attn_build_info{version,grpc_version,onednn_version}   gauge = 1
//   attn_auth_rejected_total{reason}              counter (token check)
//
// Cost: every series is created once (Family::Add), when its model version
// first loads, and kept as a raw pointer (never removed, so pointers stay
// valid); recording is a hash lookup under a reader lock plus an atomic add
// or a histogram observation, per request or per kernel call, never per
// token. Label values are bounded: model names come from the repository, and
// a request naming any other model is counted under model="unknown" (which
// therefore also holds a real model named "unknown"); `code` takes the 17
// gRPC code names.
//
// Thread-safety: all methods may be called concurrently from any thread.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/models/lifecycle_observer.h"
#include "server/models/model_repository.h"
#include "server/security/token_store.h"
#include "server/serving/batch_observer.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace attn::server {

class ServerMetrics;
namespace metrics_internal {
struct NameSeries;
struct VersionSeries;
}  // namespace metrics_internal

// The label value of requests for models that do not exist.
inline constexpr char kUnknownModelLabel[] = "unknown";

// Bookkeeping of one Attend request (a unary call, or one message of a
// stream) from arrival to answer. Copyable, so that it can travel in a
// std::function; Finish() must be called exactly once per StartRequest().
// A default-constructed value (metrics disabled) records nothing.
class RequestMetrics {
 public:
  RequestMetrics() = default;

  // Names the model the request asked for (any string; unknown names are
  // counted as kUnknownModelLabel). Default: unknown.
  void SetModel(absl::string_view model);

  // Counts the request under `code`, observes its duration when
  // `reached_executor` (it was queued, then computed or dropped), and ends
  // it as in-flight.
  void Finish(absl::StatusCode code, bool reached_executor);

 private:
  friend class ServerMetrics;

  ServerMetrics* metrics_ = nullptr;
  const metrics_internal::NameSeries* series_ = nullptr;
  std::chrono::steady_clock::time_point start_;
};

class ServerMetrics final : public BatchObserver, public LifecycleObserver {
 public:
  // Registers every family and the series of each model in `models` (and
  // of the unknown model) in a new registry. Ready gauges start at 1.
  // Versions loaded later get their series from LifecycleObserver calls.
  explicit ServerMetrics(
      const std::vector<std::shared_ptr<const Model>>& models);
  ~ServerMetrics() override;

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The registry holding every attn_* family (register it with an Exposer).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // A request arrived: in-flight + 1. Finish the result exactly once.
  RequestMetrics StartRequest();

  // A call was refused by the token check (reason != kOk).
  void AuthRejected(AuthResult reason);

  // Sets attn_model_ready of every model (0 when shutting down).
  void SetModelsReady(bool ready);

  // BatchObserver (called by the Batcher).
  void TaskQueued(const Model& model) override;
  void TaskDequeued(const Model& model, absl::Duration waited) override;
  void BatchComputed(const Model& model, int64_t requests, int64_t tokens,
                     absl::Duration compute,
                     const absl::Status& status) override;

  // LifecycleObserver (called by ModelLifecycle).
  void VersionReady(const Model& model) override;
  void VersionUnrouted(const std::string& name, int64_t version) override;
  void VersionFreed(const std::string& name, int64_t version) override;
  void LoadSucceeded(const std::string& name, absl::Duration took) override;
  void LoadFailed(const std::string& name) override;

  // Implementation details follow. API users need not read.
 private:
  friend class RequestMetrics;
  using NameSeries = metrics_internal::NameSeries;
  using VersionSeries = metrics_internal::VersionSeries;

  // The series of `model`, or of the unknown model. Never null.
  const NameSeries* FindName(absl::string_view model) const;
  // Null for a model version that never loaded.
  const VersionSeries* FindVersion(const Model& model) const;

  void AddRequestSeries(const std::string& label, NameSeries* s);
  NameSeries* EnsureNameLocked(const std::string& model)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(series_mu_);
  // `batching` (may be null) sets the queue capacity.
  VersionSeries* EnsureVersionLocked(const std::string& model, int64_t version,
                                     const BatchingOptions* batching)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(series_mu_);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* inflight_ = nullptr;
  // Indexed by AuthResult; kOk stays null.
  prometheus::Counter* auth_rejected_[4] = {};
  // Families that get series as models load (owned by registry_).
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* request_duration_ = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_duration_ = nullptr;
  prometheus::Family<prometheus::Histogram>* compute_duration_ = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* batch_tokens_ = nullptr;
  prometheus::Family<prometheus::Counter>* tokens_ = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_depth_ = nullptr;
  prometheus::Family<prometheus::Gauge>* queue_capacity_ = nullptr;
  prometheus::Family<prometheus::Gauge>* ready_ = nullptr;
  prometheus::Family<prometheus::Counter>* load_failures_ = nullptr;
  prometheus::Family<prometheus::Histogram>* load_duration_ = nullptr;
  prometheus::Family<prometheus::Gauge>* memory_ = nullptr;

  std::unique_ptr<NameSeries> unknown_;
  mutable absl::Mutex series_mu_;
  // unknown_, or the series of a real model named "unknown".
  std::atomic<const NameSeries*> unknown_series_{nullptr};
  absl::flat_hash_map<std::string, std::unique_ptr<NameSeries>> names_
      ABSL_GUARDED_BY(series_mu_);
  absl::flat_hash_map<std::pair<std::string, int64_t>,
                      std::unique_ptr<VersionSeries>>
      versions_ ABSL_GUARDED_BY(series_mu_);
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
