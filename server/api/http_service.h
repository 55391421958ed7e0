// The KServe v2 HTTP/REST service (civetweb) on --http_port, same --host,
// with the TLS/mTLS setup and bearer tokens of the gRPC port (TLS through
// server/api/http_tls.h, see docs/ARCHITECTURE.md):
//
//   GET  /v2/health/live, /v2/health/ready          (never need a token)
//   GET  /v2                                        server metadata
//   GET  /v2/models/{name}[/versions/{v}]           model metadata
//   GET  /v2/models/{name}[/versions/{v}]/ready     model readiness
//   GET  /v2/models/{name}[/versions/{v}]/config    Triton's model config
//   POST /v2/models/{name}[/versions/{v}]/infer     JSON or binary tensors
//
// Inference runs through StartV2Infer (the attn.v1 path: validation,
// budget, batches, metrics with protocol="kserve_http"); the handler thread
// waits for the executor's answer. Errors are {"error": "..."} with 400
// (INVALID_ARGUMENT), 404 (NOT_FOUND), 503 (UNAVAILABLE), 429
// (RESOURCE_EXHAUSTED), 504 (DEADLINE_EXCEEDED), 401/403 (token), 413
// (body over the message size limit), 405 (method), 500 otherwise.
// Readiness (/v2/health/ready, .../ready) is 200 {"ready":true} or 503
// {"ready":false} (draining, or a model being reloaded/unloaded), so that
// Kubernetes probes and load balancers read the status code alone.
//
//   auto http = HttpService::Start(options, &attention, &v2, metrics);
//   (*http)->port();
//   (*http)->Stop();   // before the batcher shuts down
//
// Thread-safety: Start/Stop from one thread; requests are served
// concurrently on civetweb's worker threads (one per open connection, up to
// kHttpThreads; keep-alive is on).
#ifndef ATTNSERVE_SERVER_API_HTTP_SERVICE_H_
#define ATTNSERVE_SERVER_API_HTTP_SERVICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/api/attention_service.h"
#include "server/api/inference_service.h"
#include "server/api/server_credentials.h"
#include "server/observability/metrics.h"

struct mg_context;
struct mg_connection;

namespace attn::server {

// Worker threads of the HTTP server: concurrent connections it serves
// (civetweb serves one connection per thread; more wait to be accepted).
inline constexpr int kHttpThreads = 64;

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // REQUIRES: 1..65535 (0 = off is the caller's business)
  int64_t max_body_bytes = int64_t{256} << 20;
  ServerSecurity security;  // TLS, client CA and tokens, as on gRPC
};

class HttpService {
 public:
  // Listens and serves. `attention`, `v2` and `metrics` (may be null) are
  // not owned and must outlive Stop(). Errors: UNAVAILABLE when the
  // address cannot be bound; with TLS, FAILED_PRECONDITION when the OpenSSL
  // compatibility objects are missing and INVALID_ARGUMENT when the
  // certificates cannot be used (http_tls.h).
  static absl::StatusOr<std::unique_ptr<HttpService>> Start(
      const HttpOptions& options, const AttentionServiceImpl* attention,
      const InferenceServiceImpl* v2, ServerMetrics* metrics);

  ~HttpService();  // Stop()s
  HttpService(const HttpService&) = delete;
  HttpService& operator=(const HttpService&) = delete;

  int port() const { return port_; }
  bool tls() const { return options_.security.tls.has_value(); }

  // Stops accepting, waits for the requests being served. Idempotent.
  void Stop();

  // Implementation details follow. API users need not read.
  static int HandleRequest(mg_connection* conn, void* self);
  static int InitTls(void* ssl_ctx, void* self);

 private:
  HttpService() = default;
  void Serve(mg_connection* conn);
  void ServeInfer(mg_connection* conn, const std::string& model,
                  const std::string& version);

  HttpOptions options_;
  const AttentionServiceImpl* attention_ = nullptr;
  const InferenceServiceImpl* v2_ = nullptr;
  ServerMetrics* metrics_ = nullptr;
  mg_context* context_ = nullptr;
  int port_ = 0;
  absl::Status tls_error_;  // set by InitTls during mg_start
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_HTTP_SERVICE_H_
