#include "server/api/http_service.h"

#include <civetweb.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "server/api/http_tls.h"
#include "server/api/v2_infer.h"
#include "server/api/v2_json.h"
#include "server/api/v2_mapping.h"

#ifndef ATTN_VERSION
#define ATTN_VERSION "unknown"
#endif

namespace attn::server {
namespace {

constexpr char kHeaderLength[] = "Inference-Header-Content-Length";

// The HTTP status of an absl status code (KServe / Triton's mapping).
int HttpCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kUnimplemented:
      return 501;
    default:
      return 500;
  }
}

const char* Reason(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 499:
      return "Client Closed Request";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Internal Server Error";
  }
}

void Send(mg_connection* conn, int code, const std::string& body,
          std::optional<int64_t> header_length = std::nullopt,
          const char* content_type = "application/json") {
  std::string head = absl::StrCat("HTTP/1.1 ", code, " ", Reason(code),
                                  "\r\nContent-Type: ", content_type,
                                  "\r\nContent-Length: ", body.size(), "\r\n");
  if (header_length.has_value()) {
    absl::StrAppend(&head, kHeaderLength, ": ", *header_length, "\r\n");
  }
  if (code == 401) head += "WWW-Authenticate: Bearer\r\n";
  head += "\r\n";
  mg_write(conn, head.data(), head.size());
  if (!body.empty()) mg_write(conn, body.data(), body.size());
}

void SendError(mg_connection* conn, int code, absl::string_view message) {
  nlohmann::json j;
  j["error"] = std::string(message);
  Send(conn, code, j.dump());
}

void SendStatus(mg_connection* conn, const absl::Status& status) {
  SendError(conn, HttpCode(status.code()), status.message());
}

// Reads the request body, at most `limit` bytes. Errors: 413 / 400 as
// (code, message).
std::optional<std::pair<int, std::string>> ReadBody(mg_connection* conn,
                                                    int64_t limit,
                                                    std::string* body) {
  const mg_request_info* info = mg_get_request_info(conn);
  if (info->content_length > limit) {
    return std::make_pair(
        413, absl::StrCat("the request body has ", info->content_length,
                          " bytes; this server accepts at most ", limit,
                          " (--max_message_bytes)"));
  }
  if (info->content_length > 0) {
    body->reserve(static_cast<size_t>(info->content_length));
  }
  // On the heap: civetweb's worker threads have small stacks (a 64 KiB
  // array overflowed one under AddressSanitizer).
  std::vector<char> chunk(64 * 1024);
  char* buf = chunk.data();
  while (true) {
    const int n = mg_read(conn, buf, chunk.size());
    if (n < 0)
      return std::make_pair(400, std::string("reading the body failed"));
    if (n == 0) break;
    if (static_cast<int64_t>(body->size()) + n > limit) {
      return std::make_pair(413,
                            absl::StrCat("the request body exceeds ", limit,
                                         " bytes (--max_message_bytes)"));
    }
    body->append(buf, static_cast<size_t>(n));
  }
  if (info->content_length >= 0 &&
      static_cast<int64_t>(body->size()) != info->content_length) {
    return std::make_pair(
        400, absl::StrCat("the body ended after ", body->size(), " of ",
                          info->content_length, " bytes (Content-Length)"));
  }
  return std::nullopt;
}

// The parsed URL: /v2/models/{model}[/versions/{version}][/{action}].
struct Route {
  enum Kind { kServer, kLive, kReady, kModel, kNotFound } kind = kNotFound;
  std::string model;
  std::string version;
  std::string action;  // "", "ready", "config", "infer"
};

Route ParseRoute(absl::string_view uri) {
  Route r;
  if (!absl::ConsumePrefix(&uri, "/v2")) return r;
  absl::ConsumeSuffix(&uri, "/");
  if (uri.empty()) {
    r.kind = Route::kServer;
    return r;
  }
  if (uri == "/health/live") {
    r.kind = Route::kLive;
    return r;
  }
  if (uri == "/health/ready") {
    r.kind = Route::kReady;
    return r;
  }
  if (!absl::ConsumePrefix(&uri, "/models/")) return r;
  std::vector<std::string> parts = absl::StrSplit(uri, '/');
  size_t i = 0;
  r.model = parts[i++];
  if (r.model.empty()) return r;
  if (i < parts.size() && parts[i] == "versions") {
    if (i + 1 >= parts.size()) return r;
    r.version = parts[i + 1];
    i += 2;
  }
  if (i < parts.size()) r.action = parts[i++];
  if (i != parts.size()) return r;
  if (!r.action.empty() && r.action != "ready" && r.action != "config" &&
      r.action != "infer") {
    return r;
  }
  r.kind = Route::kModel;
  return r;
}

// The bearer-token check of the gRPC port, on the Authorization header(s).
AuthResult CheckToken(mg_connection* conn, const TokenStore& tokens) {
  const mg_request_info* info = mg_get_request_info(conn);
  int count = 0;
  std::optional<absl::string_view> value;
  for (int i = 0; i < info->num_headers; ++i) {
    if (absl::EqualsIgnoreCase(info->http_headers[i].name, "authorization")) {
      ++count;
      if (!value.has_value()) value = info->http_headers[i].value;
    }
  }
  return tokens.Check(value, count);
}

const char* RejectionText(AuthResult r) {
  switch (r) {
    case AuthResult::kMissing:
      return "missing bearer token: send 'Authorization: Bearer <token>' on "
             "every request except /v2/health/*";
    case AuthResult::kMalformed:
      return "malformed Authorization header: send exactly one "
             "'Bearer <token>' value";
    default:
      return "the bearer token is not accepted by this server (unknown or "
             "revoked)";
  }
}

}  // namespace

int HttpService::InitTls(void* ssl_ctx, void* self) {
  HttpService* service = static_cast<HttpService*>(self);
  service->tls_error_ = ConfigureHttpTls(service->options_.security, ssl_ctx);
  return service->tls_error_.ok() ? 1 : -1;
}

int HttpService::HandleRequest(mg_connection* conn, void* self) {
  static_cast<HttpService*>(self)->Serve(conn);
  return 1;  // answered
}

absl::StatusOr<std::unique_ptr<HttpService>> HttpService::Start(
    const HttpOptions& options, const AttentionServiceImpl* attention,
    const InferenceServiceImpl* v2, ServerMetrics* metrics) {
  std::unique_ptr<HttpService> service(new HttpService());
  service->options_ = options;
  service->attention_ = attention;
  service->v2_ = v2;
  service->metrics_ = metrics;
  const bool tls = options.security.tls.has_value();
  if (tls) {
    if (absl::Status loaded = LoadCivetwebOpenSsl(); !loaded.ok()) {
      return loaded;
    }
  }
  std::string host = options.host;
  if (host.find(':') != std::string::npos && host.front() != '[') {
    host = absl::StrCat("[", host, "]");  // IPv6 literal
  }
  // civetweb marks a TLS port with an "s" suffix.
  const std::string ports =
      absl::StrCat(host, ":", options.port, tls ? "s" : "");
  const std::string threads = absl::StrCat(kHttpThreads);
  const char* civet_options[] = {"listening_ports",
                                 ports.c_str(),
                                 "num_threads",
                                 threads.c_str(),
                                 "enable_keep_alive",
                                 "yes",
                                 "keep_alive_timeout_ms",
                                 "60000",
                                 "request_timeout_ms",
                                 "60000",
                                 "tcp_nodelay",
                                 "1",
                                 nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  // With TLS civetweb hands us its SSL_CTX to configure (returning 1 means
  // "done"; -1 fails mg_start).
  if (tls) callbacks.init_ssl = &HttpService::InitTls;
  mg_context* context = mg_start(&callbacks, service.get(), civet_options);
  if (!service->tls_error_.ok()) {
    if (context != nullptr) mg_stop(context);
    return service->tls_error_;
  }
  if (context == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("could not listen for HTTP on ", ports,
                     " (address in use, or not an address of this machine?)"));
  }
  service->context_ = context;
  mg_server_port port;
  if (mg_get_server_ports(context, 1, &port) < 1 || port.port <= 0) {
    service->Stop();
    return absl::UnavailableError("the HTTP server reports no listening port");
  }
  service->port_ = port.port;
  mg_set_request_handler(context, "/", &HttpService::HandleRequest,
                         service.get());
  return service;
}

HttpService::~HttpService() { Stop(); }

void HttpService::Stop() {
  if (context_ == nullptr) return;
  mg_stop(context_);  // waits for the worker threads
  context_ = nullptr;
}

void HttpService::Serve(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const absl::string_view method = info->request_method;
  const Route route = ParseRoute(info->local_uri);
  if (route.kind == Route::kNotFound) {
    SendError(conn, 404,
              absl::StrCat("no endpoint ", info->local_uri,
                           "; the KServe v2 endpoints are /v2, "
                           "/v2/health/{live,ready}, /v2/models/<name>"
                           "[/versions/<v>][/ready|/config|/infer]"));
    return;
  }
  const bool is_infer = route.kind == Route::kModel && route.action == "infer";
  if (is_infer ? method != "POST" : method != "GET") {
    SendError(conn, 405,
              absl::StrCat(method, " is not allowed on ", info->local_uri,
                           "; use ", is_infer ? "POST" : "GET"));
    return;
  }
  // Health endpoints are open, like grpc.health.v1 on the gRPC port.
  if (route.kind != Route::kLive && route.kind != Route::kReady &&
      options_.security.tokens != nullptr) {
    const AuthResult auth = CheckToken(conn, *options_.security.tokens);
    if (auth != AuthResult::kOk) {
      if (metrics_ != nullptr) metrics_->AuthRejected(auth);
      SendError(conn, auth == AuthResult::kUnknownToken ? 403 : 401,
                RejectionText(auth));
      return;
    }
  }
  switch (route.kind) {
    case Route::kLive:
      Send(conn, 200, R"({"live":true})");
      return;
    case Route::kReady: {
      const bool ready = v2_->ready();
      Send(conn, ready ? 200 : 503,
           ready ? R"({"ready":true})" : R"({"ready":false})");
      return;
    }
    case Route::kServer: {
      nlohmann::json j;
      j["name"] = kV2ServerName;
      j["version"] = ATTN_VERSION;
      j["extensions"] = nlohmann::json::array();
      for (const char* e : kV2Extensions) j["extensions"].push_back(e);
      Send(conn, 200, j.dump());
      return;
    }
    default:
      break;
  }
  if (is_infer) {
    ServeInfer(conn, route.model, route.version);
    return;
  }
  absl::StatusOr<std::shared_ptr<const Model>> model =
      FindV2Model(attention_->repository(), route.model, route.version);
  if (!model.ok()) {
    SendStatus(conn, model.status());
    return;
  }
  if (route.action == "ready") {
    const bool ready = v2_->model_ready(route.model);
    nlohmann::json j;
    j["name"] = route.model;
    j["ready"] = ready;
    Send(conn, ready ? 200 : 503, j.dump());
  } else if (route.action == "config") {
    inference::ModelConfigResponse config;
    FillModelConfig(**model, config.mutable_config());
    std::string text;
    google::protobuf::util::JsonPrintOptions print;
    print.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(config.config(), &text,
                                                      print);
    Send(conn, 200, text);
  } else {
    inference::ModelMetadataResponse metadata;
    FillModelMetadata(**model, attention_->repository(), &metadata);
    Send(conn, 200, ModelMetadataJson(metadata));
  }
}

void HttpService::ServeInfer(mg_connection* conn, const std::string& model,
                             const std::string& version) {
  // Requests refused before they reach the attn.v1 path are counted here
  // (StartV2Infer counts the others), so every REST infer is in the metrics.
  auto refuse = [&](int http_code, absl::StatusCode code,
                    absl::string_view message) {
    RequestMetrics metrics = attention_->StartRequestMetrics(
        v1::AttendRequest(), Protocol::kKserveHttp);
    metrics.SetModel(model);
    metrics.Finish(code, /*reached_executor=*/false);
    SendError(conn, http_code, message);
  };
  std::string body;
  if (auto error = ReadBody(conn, options_.max_body_bytes, &body)) {
    refuse(error->first,
           error->first == 413 ? absl::StatusCode::kResourceExhausted
                               : absl::StatusCode::kInvalidArgument,
           error->second);
    return;
  }
  std::optional<int64_t> header_length;
  if (const char* h = mg_get_header(conn, kHeaderLength)) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(h, &n)) {
      refuse(400, absl::StatusCode::kInvalidArgument,
             absl::StrCat(kHeaderLength, " is '", h,
                          "'; it must be the byte length of the JSON "
                          "header that starts the body"));
      return;
    }
    header_length = n;
  }
  absl::StatusOr<JsonInferRequest> parsed =
      ParseJsonInferRequest(body, header_length);
  if (!parsed.ok()) {
    refuse(HttpCode(parsed.status().code()), parsed.status().code(),
           parsed.status().message());
    return;
  }
  parsed->request.set_model_name(model);
  parsed->request.set_model_version(version);
  body.clear();
  body.shrink_to_fit();

  absl::Notification answered;
  absl::Status result;
  inference::ModelInferResponse response;
  InflightBudget::Reservation reservation;
  const absl::Status started = StartV2Infer(
      *attention_, Protocol::kKserveHttp, parsed->request,
      absl::InfiniteFuture(), std::make_shared<CancellationFlag>(false),
      &reservation, [&](absl::Status s, inference::ModelInferResponse r) {
        result = std::move(s);
        response = std::move(r);
        answered.Notify();
      });
  if (!started.ok()) {
    SendStatus(conn, started);
    return;
  }
  answered.WaitForNotification();
  if (!result.ok()) {
    SendStatus(conn, result);
    return;
  }
  std::optional<int64_t> out_header_length;
  const std::string out =
      EncodeJsonInferResponse(*parsed, response, &out_header_length);
  Send(conn, 200, out, out_header_length,
       out_header_length.has_value() ? "application/octet-stream"
                                     : "application/json");
}

}  // namespace attn::server
