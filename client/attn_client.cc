#include "client/attn_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/service_config.h"
#include "health.grpc.pb.h"  // generated from client/health.proto
#include "health.pb.h"

namespace attn {
namespace {

// Sets the context's deadline unless it is infinite.
void SetDeadline(grpc::ClientContext& context, absl::Time deadline) {
  if (deadline != absl::InfiniteFuture()) {
    context.set_deadline(absl::ToChronoTime(deadline));
  }
}

}  // namespace

const char* HealthStatusName(HealthStatus status) {
  switch (status) {
    case HealthStatus::kServing:
      return "SERVING";
    case HealthStatus::kNotServing:
      return "NOT_SERVING";
    case HealthStatus::kServiceUnknown:
      return "SERVICE_UNKNOWN";
    case HealthStatus::kUnknown:
      break;
  }
  return "UNKNOWN";
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// State of one AttendAsync call; lives until its callback has run.
struct Client::AsyncCall {
  grpc::ClientContext context;
  v1::AttendRequest request;
  v1::AttendResponse response;
  AttendCallback done;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const std::string& target, const ClientOptions& options) {
  if (target.empty()) {
    return absl::InvalidArgumentError(
        "target is empty; expected host:port, e.g. 127.0.0.1:50051");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  ApplyClientServiceConfig(options.retry_unavailable, &args);
  if (options.credentials) {
    return std::make_unique<Client>(
        grpc::CreateCustomChannel(target, options.credentials, args));
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateChannel(target, options.security, std::move(args));
  if (!channel.ok()) return channel.status();
  return std::make_unique<Client>(*std::move(channel));
}

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      stub_(v1::AttentionService::NewStub(channel_)) {}

Client::~Client() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* pending) { return *pending == 0; }, &pending_async_));
}

absl::StatusOr<v1::AttendResponse> Client::Attend(
    const v1::AttendRequest& request, absl::Time deadline) {
  grpc::ClientContext context;
  SetDeadline(context, deadline);
  v1::AttendResponse response;
  grpc::Status status = stub_->Attend(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

void Client::AttendAsync(v1::AttendRequest request, absl::Time deadline,
                         AttendCallback done) {
  auto* call = new AsyncCall;
  call->request = std::move(request);
  call->done = std::move(done);
  SetDeadline(call->context, deadline);
  {
    absl::MutexLock lock(&mu_);
    ++pending_async_;
  }
  stub_->async()->Attend(
      &call->context, &call->request, &call->response,
      [this, call](grpc::Status status) { FinishAsync(call, status); });
}

void Client::FinishAsync(AsyncCall* call, const grpc::Status& status) {
  std::unique_ptr<AsyncCall> owned(call);
  if (status.ok()) {
    owned->done(std::move(owned->response));
  } else {
    owned->done(FromGrpcStatus(status));
  }
  owned.reset();
  absl::MutexLock lock(&mu_);
  --pending_async_;
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels(absl::Time deadline) {
  grpc::ClientContext context;
  SetDeadline(context, deadline);
  v1::ListModelsResponse response;
  grpc::Status status =
      stub_->ListModels(&context, v1::ListModelsRequest(), &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

namespace {

v1::AttendRequest StepRequest(const std::string& model, int64_t version,
                              const std::string& session_id,
                              const v1::Tensor& tokens, int64_t position,
                              bool start) {
  v1::AttendRequest request;
  request.set_model(model);
  request.set_version(version);
  *request.mutable_query() = tokens;
  request.set_session_id(session_id);
  request.set_session_start(start);
  request.set_session_position(position);
  return request;
}

}  // namespace

absl::StatusOr<v1::AttendResponse> Client::StartSession(
    const std::string& model, int64_t version, const std::string& session_id,
    const v1::Tensor& prefix, absl::Time deadline) {
  return Attend(StepRequest(model, version, session_id, prefix, 0, true),
                deadline);
}

absl::StatusOr<v1::AttendResponse> Client::Step(
    const std::string& model, int64_t version, const std::string& session_id,
    const v1::Tensor& tokens, int64_t position, absl::Time deadline) {
  return Attend(
      StepRequest(model, version, session_id, tokens, position, false),
      deadline);
}

absl::StatusOr<int64_t> Client::EndSession(const std::string& model,
                                           int64_t version,
                                           const std::string& session_id,
                                           absl::Time deadline) {
  grpc::ClientContext context;
  SetDeadline(context, deadline);
  v1::EndSessionRequest request;
  request.set_model(model);
  request.set_version(version);
  request.set_session_id(session_id);
  v1::EndSessionResponse response;
  grpc::Status status = stub_->EndSession(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response.session_length();
}

absl::StatusOr<v1::ModelInfo> Client::GetModel(const std::string& name,
                                               int64_t version,
                                               absl::Time deadline) {
  grpc::ClientContext context;
  SetDeadline(context, deadline);
  v1::GetModelRequest request;
  request.set_model(name);
  request.set_version(version);
  v1::ModelInfo response;
  grpc::Status status = stub_->GetModel(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<HealthStatus> Client::Health(const std::string& service,
                                            absl::Time deadline) {
  grpc::ClientContext context;
  SetDeadline(context, deadline);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  switch (response.status()) {
    case grpc::health::v1::HealthCheckResponse::SERVING:
      return HealthStatus::kServing;
    case grpc::health::v1::HealthCheckResponse::NOT_SERVING:
      return HealthStatus::kNotServing;
    case grpc::health::v1::HealthCheckResponse::SERVICE_UNKNOWN:
      return HealthStatus::kServiceUnknown;
    default:
      return HealthStatus::kUnknown;
  }
}

}  // namespace attn
