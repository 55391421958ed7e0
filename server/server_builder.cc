#include "server/server_builder.h"

#include <iostream>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
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
  if (repository == nullptr) {
    return absl::InvalidArgumentError("AttentionServer: no model repository");
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
  server->repository_ = std::move(repository);
  if (options.metrics_port != 0) {
    server->metrics_ =
        std::make_unique<ServerMetrics>(server->repository_->List());
    absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
        MetricsEndpoint::Start(options.host, options.metrics_port,
                               server->metrics_->registry());
    if (!endpoint.ok()) return endpoint.status();
    server->metrics_endpoint_ = std::move(*endpoint);
  }
  // Every model warms up before the server listens, so it is ready (health
  // SERVING) only once its first requests cost what later ones do.
  for (const auto& model : server->repository_->List()) {
    absl::StatusOr<absl::Duration> took = WarmUp(*model, threads);
    if (!took.ok()) return took.status();
    if (!model->config.warmup.empty()) {
      std::cerr << absl::StrCat("attn_server: warmed up model '", model->name,
                                "' version ", model->version, " with ",
                                model->config.warmup.size(), " shape(s) in ",
                                absl::ToInt64Milliseconds(*took), " ms\n");
    }
  }
  SessionTable::Options session_options;
  session_options.kv_cache_bytes = options.kv_cache_bytes;
  session_options.clock = options.clock;
  if (server->metrics_ != nullptr) {
    server->session_metrics_ =
        std::make_unique<SessionMetrics>(server->metrics_->registry());
    session_options.observer = server->session_metrics_.get();
  }
  absl::StatusOr<std::unique_ptr<SessionTable>> sessions =
      SessionTable::Create(session_options, server->repository_->List());
  if (!sessions.ok()) return sessions.status();
  server->sessions_ = std::move(*sessions);
  Batcher::Options batcher_options;
  batcher_options.threads = threads;
  batcher_options.clock = options.clock;
  batcher_options.observer = server->metrics_.get();
  server->batcher_ = std::make_unique<Batcher>(batcher_options);
  const int64_t inflight_limit = options.max_inflight_bytes > 0
                                     ? options.max_inflight_bytes
                                     : InflightBudget::DefaultLimit();
  server->budget_ = std::make_unique<InflightBudget>(inflight_limit);
  ValidationLimits limits;
  limits.max_message_bytes = options.max_message_bytes;
  server->service_ = std::make_unique<AttentionServiceImpl>(
      server->repository_, server->batcher_.get(), limits,
      server->metrics_.get(), server->budget_.get());
  server->service_->EnableSessions(server->sessions_.get(),
                                   options.security.tokens != nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  const std::string address = ListenAddress(options.host, options.port);
  int bound_port = 0;
  builder.AddListeningPort(
      address, MakeServerCredentials(options.security, server->metrics_.get()),
      &bound_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Transport memory (receive buffers of messages not yet handed to a
  // handler) is bounded too: the budget plus one largest message. Streams
  // per connection are capped so that one client cannot open unboundedly
  // many calls on a single connection.
  grpc::ResourceQuota quota("attn_server");
  quota.Resize(static_cast<size_t>(inflight_limit + options.max_message_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             kMaxConcurrentStreamsPerConnection);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    server->batcher_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("could not listen on ", address,
                     " (address in use, or not an address of this machine?)"));
  }
  server->port_ = bound_port;
  grpc::HealthCheckServiceInterface* health =
      server->server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(kAttentionServiceName, true);
    health->SetServingStatus("", true);
  }
  return server;
}

AttentionServer::~AttentionServer() { Shutdown(absl::ZeroDuration()); }

void AttentionServer::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (metrics_ != nullptr) metrics_->SetModelsReady(false);
  if (server_ != nullptr) {
    grpc::HealthCheckServiceInterface* health =
        server_->GetHealthCheckService();
    if (health != nullptr) health->SetServingStatus(false);
    // Refuses new calls, waits for in-flight ones (their tasks still run on
    // the batcher) until the deadline, then cancels the rest.
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }
  if (batcher_ != nullptr) batcher_->Shutdown();
}

}  // namespace attn::server
