// attn::Client: C++ client of attn.v1.AttentionService and grpc.health.v1.
//
// Usage:
//   auto client = attn::Client::Create("127.0.0.1:50051");
//   if (!client.ok()) ...;
//   attn::v1::AttendRequest request;
//   request.set_model("demo");
//   *request.mutable_query() = *attn::MakeTensor(values, {2, 8, 256});
//   absl::StatusOr<attn::v1::AttendResponse> response =
//       (*client)->Attend(request, absl::Now() + absl::Seconds(5));
//   if (!response.ok()) ...;  // status code as returned by the server
//   std::vector<float> out = *attn::TensorToFloats(response->output());
//
// Errors of every call are the server's gRPC status, converted to
// absl::Status with the same code and message (the code spaces are equal).
#ifndef ATTNSERVE_CLIENT_ATTN_CLIENT_H_
#define ATTNSERVE_CLIENT_ATTN_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attn/v1/attention.grpc.pb.h"
#include "attn/v1/attention.pb.h"
#include "client/channel_credentials.h"  // IWYU pragma: export
#include "client/tensor_convert.h"       // IWYU pragma: export
#include "grpcpp/grpcpp.h"

namespace attn {

// Serving status reported by grpc.health.v1.Health/Check.
enum class HealthStatus { kUnknown, kServing, kNotServing, kServiceUnknown };

// Returns "SERVING", "NOT_SERVING", ...
const char* HealthStatusName(HealthStatus status);

// Options of Client::Create.
struct ClientOptions {
  // Channel credentials. Default (nullptr): built from `security`. When set,
  // `security` is ignored.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS/mTLS files, server name and bearer token (security.auth_token).
  // Default: plaintext, no token.
  ChannelSecurity security;
  // Largest message sent or received, bytes. Default: 256 MiB, enough for the
  // attention weights of long sequences ([B, H, Sq, Sk] floats).
  int max_message_bytes = 256 << 20;
  // Retry calls that fail with UNAVAILABLE on another replica (Attend is
  // idempotent); see client/service_config.h. Load balancing is round_robin.
  bool retry_unavailable = true;
};

// Converts a gRPC status to an absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// A connection to one attnserve server.
//
// Thread-safe: every method may be called concurrently from any thread; the
// underlying channel multiplexes calls. The destructor waits for the
// callbacks of pending AttendAsync calls to finish.
class Client {
 public:
  // Called exactly once with the result of AttendAsync, on a gRPC thread: it
  // must not block for long.
  using AttendCallback =
      std::function<void(absl::StatusOr<v1::AttendResponse> response)>;

  // Creates a client for `target` ("host:port", "dns:///host:port",
  // "ipv4:127.0.0.1:A,127.0.0.1:B", "unix:path"); calls are spread
  // round-robin over every address the target resolves to. Does not connect
  // yet: the first call does. Errors: INVALID_ARGUMENT if target is empty;
  // the errors of MakeChannelCredentials (bad TLS files).
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const std::string& target, const ClientOptions& options = {});

  // Uses an existing channel. REQUIRES: channel != nullptr.
  explicit Client(std::shared_ptr<grpc::Channel> channel);

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Runs one attention request. `deadline` bounds the whole call
  // (absl::InfiniteFuture() for none): past it the result is
  // DEADLINE_EXCEEDED.
  absl::StatusOr<v1::AttendResponse> Attend(
      const v1::AttendRequest& request,
      absl::Time deadline = absl::InfiniteFuture());

  // Starts one attention request and returns at once; `done` receives the
  // result. REQUIRES: done is callable.
  void AttendAsync(v1::AttendRequest request, absl::Time deadline,
                   AttendCallback done);

  // Sessions (stateful decoding, README "Sessions"). A step appends the
  // tokens of `tokens` ([S, d_model] or [1, S, d_model]) to session
  // `session_id` of `model` (version 0: newest for a start, the session's
  // own version after) and returns their causal attention over every cached
  // token; response.session_length() is the new length. Step always sends
  // session_position = `position` (the previous session_length), so a
  // retried step is refused (FAILED_PRECONDITION, or NOT_FOUND on another
  // replica) and never applied twice. Errors: as the server's Attend
  // (ALREADY_EXISTS for a live id on StartSession, NOT_FOUND for an
  // unknown, ended, expired or evicted one: start again with the prefix).
  absl::StatusOr<v1::AttendResponse> StartSession(
      const std::string& model, int64_t version, const std::string& session_id,
      const v1::Tensor& prefix, absl::Time deadline = absl::InfiniteFuture());
  absl::StatusOr<v1::AttendResponse> Step(
      const std::string& model, int64_t version, const std::string& session_id,
      const v1::Tensor& tokens, int64_t position,
      absl::Time deadline = absl::InfiniteFuture());
  // Ends a session and frees its KV cache; returns its length. Errors:
  // NOT_FOUND when it is not live.
  absl::StatusOr<int64_t> EndSession(
      const std::string& model, int64_t version, const std::string& session_id,
      absl::Time deadline = absl::InfiniteFuture());

  // Every loaded model version.
  absl::StatusOr<v1::ListModelsResponse> ListModels(
      absl::Time deadline = absl::InfiniteFuture());

  // One model; version 0 = newest. Errors: NOT_FOUND from the server.
  absl::StatusOr<v1::ModelInfo> GetModel(
      const std::string& name, int64_t version = 0,
      absl::Time deadline = absl::InfiniteFuture());

  // grpc.health.v1.Health/Check of `service` ("" = the whole server).
  absl::StatusOr<HealthStatus> Health(
      const std::string& service = "",
      absl::Time deadline = absl::InfiniteFuture());

  // The channel, e.g. to wait for it to connect.
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  struct AsyncCall;

  void FinishAsync(AsyncCall* call, const grpc::Status& status);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;

  absl::Mutex mu_;
  int64_t pending_async_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attn

#endif  // ATTNSERVE_CLIENT_ATTN_CLIENT_H_
