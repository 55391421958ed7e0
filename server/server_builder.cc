#include "server/server_builder.h"

#include <algorithm>
#include <iostream>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "server/serving/thread_priority.h"
#include "server/serving/warmup.h"

namespace attn::server {
namespace {

// HTTP/2 streams (calls) one connection may have open at once.
constexpr int kMaxConcurrentStreamsPerConnection = 1024;

std::string ListenAddress(const std::string& host, int port) {
  if (absl::StrContains(host, ':') && !absl::StartsWith(host, "[")) {
    return absl::StrCat("[", host, "]:", port);  // IPv6 literal
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionServer>> AttentionServer::Start(
    const ServerOptions& options,
    std::shared_ptr<const ModelRepository> repository) {
  if (repository == nullptr && options.model_repository.empty()) {
    return absl::InvalidArgumentError("AttentionServer: no model repository");
  }
  if (options.model_load_threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("model_load_threads is ",
                                                   options.model_load_threads,
                                                   "; expected at least 1"));
  }
  if (options.enable_model_control && options.model_repository.empty()) {
    return absl::InvalidArgumentError(
        "model control (--enable_model_control) needs a model repository "
        "(--model_repository): the built-in demo model cannot be loaded or "
        "unloaded");
  }
  if (options.repository_poll < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "repository_poll is negative; expected 0 (off) or a period");
  }
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "port is ", options.port, "; expected 0 (any free port) to 65535"));
  }
  if (options.metrics_port < 0 || options.metrics_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_port is ", options.metrics_port,
                     "; expected 0 (metrics off) or 1 to 65535"));
  }
  if (options.host.empty()) {
    return absl::InvalidArgumentError(
        "host is empty; use e.g. 0.0.0.0 (all interfaces) or 127.0.0.1");
  }
  if (options.max_inflight_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_inflight_bytes is ", options.max_inflight_bytes,
                     "; expected 0 (default) or a positive byte count"));
  }
  if (options.max_message_bytes < 1 ||
      options.max_message_bytes > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes is ", options.max_message_bytes,
                     "; expected 1 to ", std::numeric_limits<int32_t>::max()));
  }
  if (options.max_receive_message_bytes < 0 ||
      options.max_receive_message_bytes > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_receive_message_bytes is ", options.max_receive_message_bytes,
        "; expected 0 (derived from the models) or 1 to ",
        std::numeric_limits<int32_t>::max()));
  }
  if (options.executor_nice < 0 || options.executor_nice > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("executor_nice is ", options.executor_nice,
                     "; expected 0 (same priority) to 19"));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads is ", options.threads,
                     "; expected >= 1, or 0 for the hardware concurrency"));
  }
  if (!options.security.client_ca.empty() && !options.security.tls) {
    return absl::InvalidArgumentError(
        "a client CA (--tls_client_ca) needs TLS: also give --tls_cert and "
        "--tls_key");
  }
  int threads = options.threads;
  if (threads == 0) {
    threads = std::max(1u, std::thread::hardware_concurrency());
  }

  std::unique_ptr<AttentionServer> server(new AttentionServer());
  server->host_ = options.host;
  if (options.model_repository.empty()) {
    server->repository_ = std::move(repository);
  }
  if (options.metrics_port != 0) {
    server->metrics_ = std::make_unique<ServerMetrics>(
        server->repository_ != nullptr ? server->repository_->List()
                                       : std::vector<ModelHandle>{});
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options.host, options.metrics_port,
                               server->metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    server->metrics_endpoint_ = std::move(*endpoint);
  }
  // Every version warms up before it serves (and the server listens only
  // once the start-up versions have), so it is ready (health SERVING) only
  // once its first requests cost what later ones do.
  auto warm_up = [threads](const Model& model) -> absl::Status {
    absl::StatusOr<absl::Duration> took = WarmUp(model, threads);
    if (!took.ok()) return took.status();
    if (!model.config.warmup.empty()) {
      std::cerr << absl::StrCat("attn_server: warmed up model '", model.name,
                                "' version ", model.version, " with ",
                                model.config.warmup.size(), " shape(s) in ",
                                absl::ToInt64Milliseconds(*took), " ms\n");
    }
    return absl::OkStatus();
  };
  if (!options.model_repository.empty()) {
    ModelLifecycle::Options lifecycle;
    lifecycle.root = options.model_repository;
    lifecycle.load_threads = options.model_load_threads;
    lifecycle.poll_interval = options.repository_poll;
    lifecycle.exit_on_load_error = options.exit_on_load_error;
    lifecycle.prepare = warm_up;
    // Loads (and their warm-up's OpenMP team) run below the executor.
    const int load_nice = std::min(19, options.executor_nice + 5);
    lifecycle.load_thread_init = [load_nice] {
      const int raise = load_nice - CurrentThreadNice();
      if (raise > 0) (void)LowerCurrentThreadPriority(raise);
    };
    server->lifecycle_events_ =
        std::make_unique<LifecycleEvents>(server->metrics_.get());
    lifecycle.observer = server->lifecycle_events_.get();
    absl::StatusOr<std::unique_ptr<ModelLifecycle>> started =
        ModelLifecycle::Start(lifecycle);
    if (!started.ok()) return started.status();
    server->lifecycle_ = *std::move(started);
    server->repository_ = server->lifecycle_->repository();
  } else {
    for (const auto& model : server->repository_->List()) {
      if (absl::Status s = warm_up(*model); !s.ok()) return s;
    }
  }
  Batcher::Options batcher_options;
  batcher_options.threads = threads;
  batcher_options.executor_nice = options.executor_nice;
  batcher_options.clock = options.clock;
  batcher_options.observer = server->metrics_.get();
  server->batcher_ = std::make_unique<Batcher>(batcher_options);
  const int64_t inflight_limit = options.max_inflight_bytes > 0
                                     ? options.max_inflight_bytes
                                     : InflightBudget::DefaultLimit();
  server->budget_ = std::make_unique<InflightBudget>(inflight_limit);
  if (options.max_receive_message_bytes > 0) {
    server->receive_limit_ = options.max_receive_message_bytes;
    server->receive_limit_source_ = "--max_receive_message_bytes";
  } else {
    for (const auto& model : server->repository_->List()) {
      const int64_t need = ReceiveLimitFor(*model);
      if (need > server->receive_limit_) {
        server->receive_limit_ = need;
        server->receive_limit_source_ = absl::StrCat(
            "model '", model->name, "' version ", model->version,
            ": max_sequence_length ", model->config.max_sequence_length,
            " x d_model ", model->attention.d_model);
      }
    }
  }
  ValidationLimits limits;
  limits.max_message_bytes = options.max_message_bytes;
  server->service_ = std::make_unique<AttentionServiceImpl>(
      server->repository_, server->batcher_.get(), limits,
      server->metrics_.get(), server->budget_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = ListenAddress(options.host, options.port);
  int bound_port = 0;
  builder.AddListeningPort(
      address, MakeServerCredentials(options.security, server->metrics_.get()),
      &bound_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(server->receive_limit_));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Transport memory (receive buffers of messages not yet handed to a
  // handler) is bounded too: the budget plus one largest message. Streams
  // per connection are capped so that one client cannot open unboundedly
  // many calls on a single connection.
  grpc::ResourceQuota quota("attn_server");
  quota.Resize(static_cast<size_t>(inflight_limit + server->receive_limit_));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             kMaxConcurrentStreamsPerConnection);
  builder.RegisterService(server->service_.get());
  if (options.enable_model_control) {
    server->model_service_ =
        std::make_unique<ModelServiceImpl>(server->lifecycle_.get());
    builder.RegisterService(server->model_service_.get());
  }
  if (options.max_connection_age_s > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               options.max_connection_age_s * 1000);
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               options.max_connection_age_grace_s * 1000);
  }
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             options.keepalive_time_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             options.keepalive_timeout_s * 1000);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      options.keepalive_min_client_ping_interval_s * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                             options.keepalive_permit_without_calls ? 1 : 0);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    server->batcher_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", address,
                     " (address in use, or not an address of this machine?)"));
  }
  server->port_ = bound_port;
  server->health_ =
      std::make_unique<HealthStatus>(server->server_->GetHealthCheckService());
  // Every start-up model is loaded (and warmed up) before Start() returns:
  // all are ready now. Readiness stays SERVING from here on until a drain:
  // a reload or unload of one model changes only that model's name.
  if (server->lifecycle_events_ != nullptr) {
    server->lifecycle_events_->AttachHealth(server->health_.get());
  } else {
    for (const auto& model : server->repository_->List()) {
      server->health_->SetModelReady(model->name, true);
    }
  }
  server->health_->SetReady(true);
  return server;
}

AttentionServer::~AttentionServer() { Shutdown(absl::ZeroDuration()); }

void AttentionServer::Shutdown(absl::Duration grace) {
  Drain(absl::ZeroDuration(), grace);
}

void AttentionServer::Drain(absl::Duration delay, absl::Duration timeout) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (lifecycle_ != nullptr) lifecycle_->Stop();  // no loads from here on
  const absl::Time deadline = absl::Now() + delay + timeout;
  if (metrics_ != nullptr) metrics_->SetModelsReady(false);
  if (health_ != nullptr) health_->BeginDrain();
  absl::SleepFor(delay);  // load balancers see NOT_SERVING; we still serve
  if (server_ != nullptr) {
    // Why not grpc::Server::Shutdown at once: it cancels (CANCELLED, an
    // RST_STREAM) every call that reached the server and was not yet matched
    // to a handler, and every call whose headers arrive before the client
    // has read the GOAWAY. So first park new calls, let accepted ones finish
    // and wait for a quiet moment: closed-loop clients then all wait on a
    // parked call and send nothing while GOAWAY goes out.
    service_->StopAccepting();
    service_->WaitForAcceptedCalls(deadline, absl::Milliseconds(100));
    std::thread shutdown([this, deadline] {
      // Sends GOAWAY, closes the listener, waits for the parked calls.
      server_->Shutdown(absl::ToChronoTime(deadline));
    });
    // GOAWAY is queued ahead of the parked calls' UNAVAILABLE, so a client
    // reads it first and never reuses this connection.
    absl::SleepFor(std::min(absl::Milliseconds(200), deadline - absl::Now()));
    service_->RejectParked();
    shutdown.join();
    server_->Wait();
  }
  if (batcher_ != nullptr) batcher_->Shutdown();
}

}  // namespace attn::server
