#include "server/api/session_requests.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/api/attention_service.h"

namespace attn::server {

bool IsSessionRequest(const v1::AttendRequest& request) {
  return !request.session_id().empty() || request.session_start() ||
         request.has_session_position();
}

absl::Status CheckSessionRequest(const v1::AttendRequest& request) {
  if (request.session_id().empty()) {
    return absl::InvalidArgumentError(
        "session_start or session_position is set but session_id is empty; "
        "name the session in session_id");
  }
  if (request.session_id().size() > kMaxSessionIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_id is ", request.session_id().size(),
                     " bytes; at most ", kMaxSessionIdBytes, " are allowed"));
  }
  const char* unsupported = nullptr;
  if (request.has_causal() && !request.causal()) {
    unsupported = "causal: false";
  } else if (request.has_key()) {
    unsupported = "key";
  } else if (request.has_value()) {
    unsupported = "value";
  } else if (request.has_attn_mask()) {
    unsupported = "attn_mask";
  } else if (request.key_lengths_size() > 0) {
    unsupported = "key_lengths";
  } else if (request.return_attention_weights()) {
    unsupported = "return_attention_weights";
  }
  if (unsupported != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        unsupported,
        " is not allowed on a session step: a step is causal "
        "self-attention of its tokens over the session's cached tokens; "
        "drop it, or send a request without session_id"));
  }
  if (request.query().shape_size() == 3 && request.query().shape(0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a session step holds one sequence: query must be [1, S, d_model] or "
        "[S, d_model], got batch ",
        request.query().shape(0)));
  }
  if (request.has_session_position() && request.session_position() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("session_position is ", request.session_position(),
                     "; it is the position of the step's first token (>= 0)"));
  }
  return absl::OkStatus();
}

std::string SessionScope(const grpc::CallbackServerContext& context,
                         bool by_token) {
  if (!by_token) return "";
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

void AttentionServiceImpl::EnableSessions(SessionTable* sessions,
                                          bool scope_by_token) {
  sessions_ = sessions;
  scope_by_token_ = scope_by_token;
}

absl::StatusOr<std::shared_ptr<const Model>> AttentionServiceImpl::ResolveModel(
    const grpc::CallbackServerContext& context,
    const v1::AttendRequest& request) const {
  // A continuing step goes to the version its session is pinned to, loaded
  // or not (docs/ARCHITECTURE.md, "Sessions and model versions").
  if (sessions_ != nullptr && !request.session_id().empty() &&
      !request.session_start()) {
    std::shared_ptr<const Model> pinned = sessions_->PinnedModel(
        SessionScope(context, scope_by_token_), request.model(),
        request.version(), request.session_id());
    if (pinned != nullptr) return pinned;
  }
  return repository_->Get(request.model(), request.version());
}

absl::Status AttentionServiceImpl::BeginSessionStep(
    const grpc::CallbackServerContext& context,
    const v1::AttendRequest& request, const std::shared_ptr<const Model>& model,
    BatchTask* task) const {
  if (sessions_ == nullptr) {
    return absl::FailedPreconditionError(
        "this server does not keep sessions (no KV cache); send stateless "
        "requests without session_id");
  }
  SessionKey key{SessionScope(context, scope_by_token_), model->name,
                 model->version, request.session_id()};
  std::optional<int64_t> position;
  if (request.has_session_position()) position = request.session_position();
  absl::StatusOr<std::unique_ptr<SessionStep>> step = sessions_->BeginStep(
      key, model, request.session_start(), position, task->job.q_len);
  if (!step.ok()) return step.status();
  task->step = std::move(*step);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AttentionServiceImpl::EndSession(
    grpc::CallbackServerContext* context, const v1::EndSessionRequest* request,
    v1::EndSessionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status;
  if (request->model().empty()) {
    status = absl::InvalidArgumentError(
        "model is empty; set EndSessionRequest.model to the session's model");
  } else if (request->version() < 0) {
    status = absl::InvalidArgumentError(
        absl::StrCat("version is ", request->version(),
                     "; use the session's version (0 = the newest)"));
  } else if (request->session_id().empty()) {
    status = absl::InvalidArgumentError(
        "session_id is empty; name the session to end");
  } else if (sessions_ == nullptr) {
    status = absl::FailedPreconditionError(
        "this server does not keep sessions (no KV cache)");
  } else {
    const std::string scope = SessionScope(*context, scope_by_token_);
    absl::StatusOr<std::shared_ptr<const Model>> model = sessions_->PinnedModel(
        scope, request->model(), request->version(), request->session_id());
    if (*model == nullptr) {
      model = repository_->Get(request->model(), request->version());
    }
    status = model.status();
    if (model.ok()) {
      SessionKey key{scope, (*model)->name, (*model)->version,
                     request->session_id()};
      absl::StatusOr<int64_t> length = sessions_->End(key);
      status = length.status();
      if (length.ok()) response->set_session_length(*length);
    }
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace attn::server
