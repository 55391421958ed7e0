// attn_server: serves multi-head attention models over gRPC.
//
//   attn_server --port 50051 --metrics_port 9090 --model_repository /models
//
// Prometheus metrics are served on --metrics_port (0 turns them off).
// With no --model_repository it serves the built-in "demo" model. Once ready
// it prints exactly one line to stdout, "attn_server listening on HOST:PORT"
// (the bound port, useful with --port 0), and one line per loaded model to
// stderr. SIGINT/SIGTERM shut it down gracefully (exit 0): health turns
// NOT_SERVING, new calls are refused, in-flight calls finish.
//
// Signals are blocked in every thread (the mask is set before any thread is
// created, and threads inherit it) and taken synchronously with sigwait() by
// the main thread, so no gRPC call ever runs in a signal handler.
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/pem_files.h"
#include "server/models/model_repository.h"
#include "server/security/token_store.h"
#include "server/server_builder.h"
#include "server/serving/malloc_tuning.h"

ABSL_FLAG(std::string, host, "0.0.0.0",
          "Address to listen on (0.0.0.0 = all IPv4 interfaces).");
ABSL_FLAG(int, port, 50051, "gRPC port; 0 picks any free port.");
ABSL_FLAG(int, http_port, 0,
          "Port of the KServe v2 (Open Inference Protocol) HTTP/REST "
          "endpoint /v2/... on --host, with the TLS/mTLS setup and tokens "
          "of --port (https when --tls_cert is set); 0 = off (Triton's port "
          "is 8000).");
ABSL_FLAG(int, metrics_port, 9090,
          "Port of the Prometheus endpoint http://HOST:PORT/metrics (on "
          "--host, separate from the gRPC port); 0 turns metrics off.");
ABSL_FLAG(std::string, model_repository, "",
          "Model repository directory (<name>/config.json, "
          "<name>/<version>/model.safetensors). Empty: the built-in demo "
          "model.");
ABSL_FLAG(int64_t, max_inflight_bytes, 0,
          "Bytes all requests in flight may hold together (received, "
          "decoded, queued, computing, answering); a request that would "
          "cross it gets RESOURCE_EXHAUSTED at once, before it is decoded. "
          "0 = a quarter of physical memory, at most 4 GiB.");
ABSL_FLAG(int64_t, kv_cache_bytes, 0,
          "Bytes of the session KV cache, reserved at start-up and cut into "
          "16-token blocks; when full, idle sessions are evicted (least "
          "recently used first). 0 = a quarter of physical memory, at most "
          "4 GiB.");
ABSL_FLAG(int, threads,
          static_cast<int>(std::max(1u, std::thread::hardware_concurrency())),
          "Threads for each kernel call (one kernel call runs at a time). "
          "Default: the hardware concurrency.");

ABSL_FLAG(int64_t, max_receive_message_bytes, 0,
          "Largest request message in bytes (larger ones get "
          "RESOURCE_EXHAUSTED before they are read). 0 = derived from the "
          "models: a full-length query, key and value in fp32 plus a bool "
          "mask, at least 4 MiB.");

ABSL_FLAG(int, repository_poll_s, 0,
          "Rescan --model_repository every N seconds: new or changed "
          "versions load in the background (and serve once warmed up), "
          "versions the version_policy no longer wants are unloaded. 0 = "
          "off.");
ABSL_FLAG(int, model_load_threads, 1,
          "Threads that load model versions in the background.");
ABSL_FLAG(bool, exit_on_load_error, true,
          "Stop at start-up when a model or version fails to load. false: "
          "log it, leave it FAILED and start without it.");

ABSL_FLAG(bool, enable_model_control, false,
          "Register attn.v1.ModelService (LoadModel, UnloadModel, "
          "ReloadRepository, ModelStatus). With --auth_token_file its calls "
          "need a bearer token. Needs --model_repository.");

ABSL_FLAG(int, executor_nice, 0,
          "Nice increment of the compute threads (0-19): when the CPU is "
          "saturated, gRPC's threads run first, so health probes and "
          "rejections of excess requests stay fast. 0 = same priority.");

ABSL_FLAG(int, malloc_arena_max, -1,
          "glibc malloc arenas: -1 = one per core (at least 2), 0 = glibc's "
          "default (8 per core), N = at most N. The MALLOC_ARENA_MAX "
          "environment variable wins.");
ABSL_FLAG(int64_t, malloc_mmap_threshold_bytes, -1,
          "Buffers from this size on are mmap'ed and returned when freed: "
          "-1 = 256 KiB, 0 = glibc's dynamic default (it rises up to 32 MiB "
          "and the RSS then grows in steps), N = N bytes. "
          "MALLOC_MMAP_THRESHOLD_ in the environment wins.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server; with --tls_key turns on TLS "
          "for the gRPC port.");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key of --tls_cert (unencrypted).");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: requires every client to present a certificate "
          "signed by it (mutual TLS). Needs --tls_cert/--tls_key.");
ABSL_FLAG(std::string, auth_token_file, "",
          "File of accepted bearer tokens, one per line ('#' comments and "
          "blank lines ignored); re-read on SIGHUP. Every call except "
          "grpc.health.v1 then needs 'authorization: Bearer <token>'.");

ABSL_FLAG(double, drain_delay_s, 0,
          "On SIGTERM/SIGINT, seconds to go on serving after health turned "
          "NOT_SERVING, so that load balancers stop sending (Kubernetes: a "
          "few readiness periods).");
ABSL_FLAG(double, shutdown_timeout_s, 30,
          "After the drain delay, seconds the calls already accepted may "
          "take to complete before they are cancelled.");
ABSL_FLAG(int, grpc_max_connection_age_s, 0,
          "Send GOAWAY to connections older than this (clients reconnect, "
          "so new replicas get traffic); 0 = never.");
ABSL_FLAG(int, grpc_max_connection_age_grace_s, 30,
          "After a max-age GOAWAY, seconds the connection's calls may still "
          "run before it is closed.");
ABSL_FLAG(int, grpc_keepalive_time_s, 60,
          "Ping an idle connection after this many seconds (dead peers are "
          "noticed).");
ABSL_FLAG(int, grpc_keepalive_timeout_s, 20,
          "Close a connection whose keepalive ping is not answered within "
          "this many seconds.");
ABSL_FLAG(int, grpc_keepalive_min_client_ping_interval_s, 10,
          "Keepalive enforcement: clients pinging more often than this get "
          "GOAWAY too_many_pings.");
ABSL_FLAG(bool, grpc_keepalive_permit_without_calls, true,
          "Keepalive enforcement: allow client pings on connections with no "
          "call open.");

namespace {

// Reads the --tls_* and --auth_token_file files into `security`; errors name
// the flag and the file.
absl::Status LoadSecurity(attn::server::ServerSecurity* security) {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both (TLS) or neither "
        "(plaintext)");
  }
  if (!client_ca.empty() && cert.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs TLS: also give --tls_cert and --tls_key");
  }
  if (!cert.empty()) {
    absl::StatusOr<attn::PemKeyPair> pair =
        attn::ReadPemKeyPair("--tls_cert", cert, "--tls_key", key);
    if (!pair.ok()) return pair.status();
    security->tls = std::move(*pair);
  }
  if (!client_ca.empty()) {
    absl::StatusOr<std::string> ca =
        attn::ReadPemCertificates("--tls_client_ca", client_ca);
    if (!ca.ok()) return ca.status();
    security->client_ca = std::move(*ca);
  }
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    auto tokens = attn::server::TokenStore::Load(token_file);
    if (!tokens.ok()) return tokens.status();
    security->tokens = std::move(*tokens);
  }
  return absl::OkStatus();
}

// Blocks until SIGINT or SIGTERM arrives (they are blocked in every thread
// and taken here, synchronously); returns its number. Each SIGHUP meanwhile
// calls on_hangup.
template <typename OnHangup>
int WaitForStopSignal(OnHangup on_hangup) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      on_hangup();
      continue;
    }
    return signal_number;
  }
}

// SIGHUP: re-reads --auth_token_file (if any); on error the old tokens stay.
void ReloadTokens(const attn::server::ServerSecurity& security) {
  if (security.tokens == nullptr) {
    std::cerr << "attn_server: received SIGHUP; no --auth_token_file to "
                 "reload\n";
    return;
  }
  attn::server::TokenStore* tokens = security.tokens.get();
  const absl::Status status = tokens->Reload();
  if (!status.ok()) {
    // One write per line, so that a reader never sees half of it.
    std::cerr << absl::StrCat(
        "attn_server: SIGHUP: keeping the previous tokens: ", status.message(),
        "\n");
    return;
  }
  std::cerr << absl::StrCat(
      "attn_server: SIGHUP: reloaded ", tokens->size(), " token(s) from ",
      tokens->path(),
      tokens->size() == 0 ? " (every call except health is refused)" : "",
      "\n");
}

int Run() {
  using attn::server::AttentionServer;
  using attn::server::ModelRepository;

  const int port = absl::GetFlag(FLAGS_port);
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  const int threads = absl::GetFlag(FLAGS_threads);
  if (port < 0 || port > 65535) {
    std::cerr << "attn_server: --port is " << port
              << "; expected 0 (any free port) to 65535\n";
    return 1;
  }
  if (metrics_port < 0 || metrics_port > 65535) {
    std::cerr << "attn_server: --metrics_port is " << metrics_port
              << "; expected 0 (metrics off) or 1 to 65535\n";
    return 1;
  }
  if (threads < 1) {
    std::cerr << "attn_server: --threads is " << threads
              << "; expected at least 1\n";
    return 1;
  }

  const absl::StatusOr<attn::server::MallocTuning> malloc_tuning =
      attn::server::TuneMalloc(
          absl::GetFlag(FLAGS_malloc_arena_max),
          absl::GetFlag(FLAGS_malloc_mmap_threshold_bytes));
  if (!malloc_tuning.ok()) {
    std::cerr << "attn_server: " << malloc_tuning.status().message() << "\n";
    return 1;
  }
  std::cerr << "attn_server: " << malloc_tuning->ToString() << "\n";

  attn::server::ServerOptions options;
  if (absl::Status status = LoadSecurity(&options.security); !status.ok()) {
    std::cerr << "attn_server: " << status.message() << "\n";
    return 1;
  }

  const std::string root = absl::GetFlag(FLAGS_model_repository);
  const int poll_s = absl::GetFlag(FLAGS_repository_poll_s);
  const int load_threads = absl::GetFlag(FLAGS_model_load_threads);
  if (poll_s < 0) {
    std::cerr << "attn_server: --repository_poll_s is " << poll_s
              << "; expected 0 (off) or a number of seconds\n";
    return 1;
  }
  if (load_threads < 1) {
    std::cerr << "attn_server: --model_load_threads is " << load_threads
              << "; expected at least 1\n";
    return 1;
  }
  std::shared_ptr<const ModelRepository> models;
  if (root.empty()) {
    absl::StatusOr<std::unique_ptr<ModelRepository>> demo =
        ModelRepository::CreateDemo();
    if (!demo.ok()) {
      std::cerr << "attn_server: failed to load the demo model: "
                << demo.status() << "\n";
      return 1;
    }
    models = std::move(*demo);
    for (const auto& model : models->List()) {
      std::cerr << "attn_server: loaded model '" << model->name << "' version "
                << model->version << " (d_model " << model->attention.d_model
                << ", " << model->attention.num_heads << " heads; "
                << model->kernel->ImplementationSummary() << ") from "
                << model->source << "\n";
    }
  } else {
    options.model_repository = root;
    options.repository_poll = absl::Seconds(poll_s);
    options.model_load_threads = load_threads;
    options.exit_on_load_error = absl::GetFlag(FLAGS_exit_on_load_error);
  }
  options.enable_model_control = absl::GetFlag(FLAGS_enable_model_control);
  if (options.enable_model_control && root.empty()) {
    std::cerr << "attn_server: --enable_model_control needs "
                 "--model_repository (the built-in demo model cannot be "
                 "loaded or unloaded)\n";
    return 1;
  }

  options.host = absl::GetFlag(FLAGS_host);
  options.port = port;
  options.metrics_port = metrics_port;
  options.http_port = absl::GetFlag(FLAGS_http_port);
  options.threads = threads;
  options.executor_nice = absl::GetFlag(FLAGS_executor_nice);
  options.max_receive_message_bytes =
      absl::GetFlag(FLAGS_max_receive_message_bytes);
  options.max_inflight_bytes = absl::GetFlag(FLAGS_max_inflight_bytes);
  if (options.max_inflight_bytes < 0) {
    std::cerr << "attn_server: --max_inflight_bytes is "
              << options.max_inflight_bytes
              << "; expected 0 (default) or a positive byte count\n";
    return 1;
  }
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  options.max_connection_age_s = absl::GetFlag(FLAGS_grpc_max_connection_age_s);
  options.max_connection_age_grace_s =
      absl::GetFlag(FLAGS_grpc_max_connection_age_grace_s);
  options.keepalive_time_s = absl::GetFlag(FLAGS_grpc_keepalive_time_s);
  options.keepalive_timeout_s = absl::GetFlag(FLAGS_grpc_keepalive_timeout_s);
  options.keepalive_min_client_ping_interval_s =
      absl::GetFlag(FLAGS_grpc_keepalive_min_client_ping_interval_s);
  options.keepalive_permit_without_calls =
      absl::GetFlag(FLAGS_grpc_keepalive_permit_without_calls);
  const double drain_delay_s = absl::GetFlag(FLAGS_drain_delay_s);
  const double shutdown_timeout_s = absl::GetFlag(FLAGS_shutdown_timeout_s);
  if (!(drain_delay_s >= 0) || !(shutdown_timeout_s >= 0)) {
    std::cerr << "attn_server: --drain_delay_s and --shutdown_timeout_s must "
                 "be >= 0 seconds\n";
    return 1;
  }
  if (options.max_connection_age_s < 0 ||
      options.max_connection_age_grace_s < 0 || options.keepalive_time_s < 1 ||
      options.keepalive_timeout_s < 1 ||
      options.keepalive_min_client_ping_interval_s < 0) {
    std::cerr << "attn_server: --grpc_max_connection_age_s, "
                 "--grpc_max_connection_age_grace_s and "
                 "--grpc_keepalive_min_client_ping_interval_s must be >= 0; "
                 "--grpc_keepalive_time_s and --grpc_keepalive_timeout_s "
                 ">= 1\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<AttentionServer>> server =
      AttentionServer::Start(options, models);
  if (!server.ok()) {
    if (!root.empty() &&
        server.status().code() != absl::StatusCode::kUnavailable) {
      std::cerr << "attn_server: failed to load model repository " << root
                << ": " << server.status() << "\n";
    } else {
      std::cerr << "attn_server: " << server.status() << "\n";
    }
    return 1;
  }
  if ((*server)->metrics_port() != 0) {
    std::cerr << "attn_server: Prometheus metrics on http://"
              << (*server)->host() << ":" << (*server)->metrics_port()
              << "/metrics\n";
  }
  if ((*server)->http_port() != 0) {
    std::cerr << "attn_server: KServe v2 REST on "
              << ((*server)->http_tls() ? "https://" : "http://")
              << (*server)->host() << ":" << (*server)->http_port() << "/v2\n";
  }
  std::cerr << "attn_server: in-flight request memory limited to "
            << (*server)->budget().limit() / (1 << 20)
            << " MiB (--max_inflight_bytes)\n";
  std::cerr << absl::StrCat(
      "attn_server: requests up to ", (*server)->receive_limit() / (1 << 20),
      " MiB accepted (", (*server)->receive_limit_source(),
      "; --max_receive_message_bytes overrides)\n");
  std::cout << "attn_server listening on " << (*server)->host() << ":"
            << (*server)->port() << std::endl;

  const int signal_number =
      WaitForStopSignal([&] { ReloadTokens(options.security); });
  const absl::Duration delay = absl::Seconds(drain_delay_s);
  const absl::Duration timeout = absl::Seconds(shutdown_timeout_s);
  std::cerr << "attn_server: received "
            << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ", draining: health NOT_SERVING, serving for "
            << absl::FormatDuration(delay)
            << " more, then accepted calls may take up to "
            << absl::FormatDuration(timeout) << std::endl;
  (*server)->Drain(delay, timeout);
  std::cerr << "attn_server: stopped\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Block SIGINT/SIGTERM before any thread exists, so that every thread
  // (gRPC, executor, OpenMP) inherits the mask and only sigwait() sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);  // reloads --auth_token_file
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::SetProgramUsageMessage(
      "Serves multi-head attention models over gRPC.\n"
      "  attn_server [--host 0.0.0.0] [--port 50051] [--metrics_port 9090] "
      "[--model_repository DIR [--repository_poll_s N] "
      "[--model_load_threads N] [--exit_on_load_error=false] "
      "[--enable_model_control]] [--threads N]\n"
      "  [--tls_cert PEM --tls_key PEM [--tls_client_ca PEM]] "
      "[--auth_token_file FILE]");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
