// Builds and runs the gRPC server: AttentionService, the KServe v2
// inference.GRPCInferenceService, grpc.health.v1.Health
// and server reflection, over one shared Batcher.
//
//   ServerOptions options;
//   options.port = 0;  // any free port
//   auto server = AttentionServer::Start(options, std::move(repository));
//   if (!server.ok()) ...;
//   std::cout << "listening on " << (*server)->port();
//   ...
//   (*server)->Shutdown(absl::Seconds(30));
#ifndef ATTNSERVE_SERVER_SERVER_BUILDER_H_
#define ATTNSERVE_SERVER_SERVER_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/api/attention_service.h"
#include "server/api/health_status.h"
#include "server/api/http_service.h"
#include "server/api/inference_service.h"
#include "server/api/model_service.h"
#include "server/api/server_credentials.h"
#include "server/lifecycle_events.h"
#include "server/models/model_lifecycle.h"
#include "server/models/model_repository.h"
#include "server/observability/metrics.h"
#include "server/observability/metrics_endpoint.h"
#include "server/observability/session_metrics.h"
#include "server/serving/batcher.h"
#include "server/serving/clock.h"
#include "server/serving/inflight_budget.h"

namespace attn::server {

struct ServerOptions {
  // Address to bind. Default: "0.0.0.0" (all IPv4 interfaces). An IPv6
  // literal may be given with or without brackets.
  std::string host = "0.0.0.0";
  // Port to bind; 0 picks a free port (see AttentionServer::port()).
  // Default: 0. REQUIRES: 0 <= port <= 65535.
  int port = 0;
  // OpenMP threads per kernel call (the executor is one thread). 0 means
  // std::thread::hardware_concurrency(). Default: 0.
  int threads = 0;
  // Nice increment of the compute threads (executor and its OpenMP team):
  // under saturation gRPC's threads run first, so health probes and
  // rejections stay fast. 0 = same priority as the rest. attn_server's flag
  // defaults to 0 too. Default: 0. REQUIRES: 0 <= executor_nice <= 19.
  int executor_nice = 0;
  // Largest response message, bytes: responses that would be larger are
  // INVALID_ARGUMENT before compute. Default: 256 MiB (a [8, 8192, 1024]
  // fp32 output is 256 MiB). REQUIRES: 1 <= value <= INT32_MAX.
  int64_t max_message_bytes = int64_t{256} << 20;
  // Largest request message, bytes; larger ones are RESOURCE_EXHAUSTED (by
  // gRPC, before they are read). 0 derives it from the models: the largest
  // ReceiveLimitFor() (server/api/request_validation.h) over the repository.
  // Default: 0. REQUIRES: 0 <= value <= INT32_MAX.
  int64_t max_receive_message_bytes = 0;
  // Bytes all requests in flight may hold together (received, decoded,
  // queued, computing, answering); a request that would cross it is
  // RESOURCE_EXHAUSTED before it is decoded. 0 means
  // InflightBudget::DefaultLimit() (a quarter of physical memory, at most
  // 4 GiB). gRPC's transport memory (ResourceQuota) is bounded to this plus
  // one largest message. Default: 0. REQUIRES: >= 0.
  int64_t max_inflight_bytes = 0;
  // Budget of the session KV cache, bytes, reserved at start-up (see
  // server/serving/session_table.h). 0 means KvBlockPool::DefaultBytes()
  // (a quarter of physical memory, at most 4 GiB). Default: 0.
  // REQUIRES: >= 0.
  int64_t kv_cache_bytes = 0;
  // Time source for the batcher. Not owned. Default (nullptr): real clock.
  Clock* clock = nullptr;
  // Port of the Prometheus /metrics endpoint, on `host`, separate from the
  // gRPC port; 0 turns metrics off (nothing is recorded). attn_server's flag
  // defaults to 9090. Default: 0. REQUIRES: 0 <= metrics_port <= 65535.
  int metrics_port = 0;
  // Port of the KServe v2 HTTP/REST endpoint (/v2/..., civetweb), on
  // `host`, with the same TLS and tokens as the gRPC port; 0 = off
  // (attn_server's --http_port too; Triton's port is 8000).
  // Default: 0. REQUIRES: 0 <= http_port <= 65535.
  int http_port = 0;
  // TLS, mutual TLS and bearer tokens of the gRPC port (see
  // server/api/server_credentials.h). Default: plaintext, no tokens.
  ServerSecurity security;

  // Model repository directory, served through a ModelLifecycle (version
  // policy; versions loaded, warmed up, reloaded and unloaded at run time).
  // Empty: the repository given to Start() is served as is. Default: "".
  std::string model_repository;
  // Rescan period of model_repository (--repository_poll_s); zero: never.
  // Default: zero.
  absl::Duration repository_poll = absl::ZeroDuration();
  // Background load threads (--model_load_threads). Default: 1.
  int model_load_threads = 1;
  // A model that fails to load at start-up fails Start()
  // (--exit_on_load_error). Default: true.
  bool exit_on_load_error = true;
  // Registers attn.v1.ModelService (admin RPCs; --enable_model_control).
  // REQUIRES: model_repository set. Default: false.
  bool enable_model_control = false;
  // Connections older than this get a GOAWAY (clients reconnect, so new
  // replicas receive traffic); 0 = never. Default: 0 (gRPC's default;
  // attn_server's flag too). REQUIRES: >= 0.
  int max_connection_age_s = 0;
  // After that GOAWAY, how long the connection's calls may still run
  // before it is closed. Default: 30. REQUIRES: >= 0.
  int max_connection_age_grace_s = 30;
  // The server pings an idle connection after this, and closes it when the
  // ping is not answered within keepalive_timeout_s (dead peers are
  // noticed). Default: 60 / 20. REQUIRES: >= 1.
  int keepalive_time_s = 60;
  int keepalive_timeout_s = 20;
  // Keepalive enforcement: client pings closer together than this get the
  // connection closed (GOAWAY too_many_pings). Default: 10. REQUIRES: >= 0.
  int keepalive_min_client_ping_interval_s = 10;
  // Whether clients may ping while they have no call open. Default: true.
  bool keepalive_permit_without_calls = true;
};

// A running server. Thread-safe: Shutdown() may be called from any thread,
// more than once.
class AttentionServer {
 public:
  // Builds and starts the server. Errors: INVALID_ARGUMENT for bad options
  // or (options.model_repository) a model refused at start-up; NOT_FOUND
  // for a missing repository; UNAVAILABLE if the address cannot be bound
  // (message names it).
  // REQUIRES: repository != nullptr unless options.model_repository is set
  // (then `repository` is ignored).
  static absl::StatusOr<std::unique_ptr<AttentionServer>> Start(
      const ServerOptions& options,
      std::shared_ptr<const ModelRepository> repository);

  // Shuts down with no grace period if Shutdown() was not called.
  ~AttentionServer();

  AttentionServer(const AttentionServer&) = delete;
  AttentionServer& operator=(const AttentionServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }
  // The host as given in the options.
  const std::string& host() const { return host_; }

  // The bound metrics port; 0 when metrics are off.
  int metrics_port() const {
    return metrics_endpoint_ ? metrics_endpoint_->port() : 0;
  }
  // The bound HTTP/REST port; 0 when REST is off.
  int http_port() const { return http_ ? http_->port() : 0; }
  // Whether the HTTP/REST port speaks TLS (https).
  bool http_tls() const { return http_ != nullptr && http_->tls(); }
  // The metrics being recorded; null when metrics are off.
  ServerMetrics* metrics() const { return metrics_.get(); }

  // The model lifecycle; null when the server was given a fixed repository.
  ModelLifecycle* lifecycle() const { return lifecycle_.get(); }

  // The in-flight byte budget (its limit and current use).
  const InflightBudget& budget() const { return *budget_; }

  // The live sessions and their KV cache.
  const SessionTable& sessions() const { return *sessions_; }
  // The gRPC receive limit in force, and where it came from ("the flag", or
  // the model that needs the most).
  int64_t receive_limit() const { return receive_limit_; }
  const std::string& receive_limit_source() const {
    return receive_limit_source_;
  }

  // Attend requests accepted by the executor and not yet completed.
  int64_t InFlightTasks() const { return batcher_->InFlightTasks(); }

  // Graceful shutdown: health turns NOT_SERVING, new calls are refused,
  // in-flight calls may finish until `grace` has passed (then they are
  // cancelled), then the batcher drains and its thread is joined. Blocks
  // until done. Idempotent. Same as Drain(absl::ZeroDuration(), grace).
  void Shutdown(absl::Duration grace);

  // The zero-loss drain (docs/ARCHITECTURE.md, "Drain"):
  //   1. every health name turns NOT_SERVING; serving goes on for `delay`;
  //   2. new calls are parked; open streams finish the requests they read;
  //      calls accepted before wait until done (up to `timeout`);
  //   3. grpc::Server::Shutdown sends GOAWAY and closes the listener; then
  //      the parked calls get UNAVAILABLE; the batcher stops.
  // Clients see OK, or UNAVAILABLE for calls that arrived after step 2.
  // Blocks until done. Idempotent.
  void Drain(absl::Duration delay, absl::Duration timeout);

  // The health names (liveness, readiness, per model). Never null after
  // Start(); see server/api/health_status.h.
  HealthStatus* health() const { return health_.get(); }

  // Implementation details follow. API users need not read.
 private:
  AttentionServer() = default;

  std::string host_;
  int port_ = 0;
  std::shared_ptr<const ModelRepository> repository_;
  // Destroyed in reverse order: server, then service, then batcher, then
  // the metrics endpoint, then the metrics the batcher reports to.
  std::unique_ptr<ServerMetrics> metrics_;  // null when metrics are off
  std::unique_ptr<MetricsEndpoint> metrics_endpoint_;
  // Metrics and per-model health of the lifecycle's versions.
  std::unique_ptr<LifecycleEvents> lifecycle_events_;
  // Reports to lifecycle_events_; stopped in Shutdown() before the batcher.
  std::unique_ptr<ModelLifecycle> lifecycle_;
  std::unique_ptr<InflightBudget> budget_;
  std::unique_ptr<SessionMetrics> session_metrics_;  // null: metrics off
  std::unique_ptr<SessionTable> sessions_;  // outlives the batcher's steps
  int64_t receive_limit_ = 0;
  std::string receive_limit_source_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<AttentionServiceImpl> service_;
  std::unique_ptr<InferenceServiceImpl> v2_service_;  // KServe v2 gRPC
  std::unique_ptr<ModelServiceImpl> model_service_;   // null unless enabled
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HealthStatus> health_;  // uses server_'s health service
  // KServe v2 REST; stopped in Drain() before the batcher. Null when off.
  std::unique_ptr<HttpService> http_;

  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

// The service name the health service reports (besides "").
inline constexpr char kAttentionServiceName[] = "attn.v1.AttentionService";
static_assert(sizeof(kAttentionServiceName) == sizeof(kReadinessName));

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVER_BUILDER_H_
