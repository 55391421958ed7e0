// Prometheus metrics of attn_server: the metric families, the series of
// every loaded model (resolved once, at construction) and the per-request
// bookkeeping the service uses. Exposition is MetricsEndpoint's job.
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
//   attn_build_info{version,grpc_version,onednn_version}   gauge = 1
//   attn_auth_rejected_total{reason}              counter (token check)
//   attn_protocol_requests_total{protocol,code}   counter (attn_v1,
//                                                 kserve_grpc, kserve_http)
//
// Cost: every series is created here (Family::Add) and kept as a raw
// pointer; recording is a hash lookup in an immutable map plus an atomic add
// or a histogram observation, per request or per kernel call, never per
// token. Label values are bounded: model names come from the repository, and
// a request naming any other model is counted under model="unknown" (which
// therefore also holds a real model named "unknown"); `code` takes the 17
// gRPC code names.
//
// Thread-safety: all methods may be called concurrently from any thread.
// The set of models is fixed at construction (the repository is immutable).
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/models/model_repository.h"
#include "server/security/token_store.h"
#include "server/serving/batch_observer.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace attn::server {

class ServerMetrics;
namespace metrics_internal {
struct NameSeries;
struct VersionSeries;
}  // namespace metrics_internal

// The label value of requests for models that do not exist.
inline constexpr char kUnknownModelLabel[] = "unknown";

// The API a request came in on (label `protocol` of
// attn_protocol_requests_total).
enum class Protocol {
  kAttnV1 = 0,      // attn.v1.AttentionService (gRPC)
  kKserveGrpc = 1,  // inference.GRPCInferenceService (KServe v2 gRPC)
  kKserveHttp = 2,  // KServe v2 HTTP/REST (/v2/...)
};
inline constexpr int kNumProtocols = 3;

// "attn_v1", "kserve_grpc", "kserve_http".
const char* ProtocolLabel(Protocol protocol);

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

  // Names the API the request came in on. Default: Protocol::kAttnV1.
  void SetProtocol(Protocol protocol) { protocol_ = protocol; }

  // Counts the request under `code`, observes its duration when
  // `reached_executor` (it was queued, then computed or dropped), and ends
  // it as in-flight.
  void Finish(absl::StatusCode code, bool reached_executor);

 private:
  friend class ServerMetrics;

  ServerMetrics* metrics_ = nullptr;
  const metrics_internal::NameSeries* series_ = nullptr;
  Protocol protocol_ = Protocol::kAttnV1;
  std::chrono::steady_clock::time_point start_;
};

class ServerMetrics final : public BatchObserver {
 public:
  // Registers every family and the series of each model in `models` (and
  // of the unknown model) in a new registry. Ready gauges start at 1.
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

  // Implementation details follow. API users need not read.
 private:
  friend class RequestMetrics;
  using NameSeries = metrics_internal::NameSeries;
  using VersionSeries = metrics_internal::VersionSeries;

  // The series of `model`, or of the unknown model. Never null.
  const NameSeries* FindName(absl::string_view model) const;
  // Null for a model that was not given to the constructor.
  const VersionSeries* FindVersion(const Model& model) const;

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* inflight_ = nullptr;
  // Indexed by AuthResult; kOk stays null.
  prometheus::Counter* auth_rejected_[4] = {};
  // [protocol][status code].
  prometheus::Counter* protocol_requests_[kNumProtocols][17] = {};
  // Immutable after construction (read without locks).
  absl::flat_hash_map<std::string, std::unique_ptr<NameSeries>> names_;
  std::unique_ptr<NameSeries> unknown_;
  const NameSeries* unknown_series_ = nullptr;  // unknown_, or a real one
  absl::flat_hash_map<const Model*, std::unique_ptr<VersionSeries>> versions_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_METRICS_H_
