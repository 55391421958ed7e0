#include "server/api/model_service.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "server/api/attention_service.h"

namespace attn::server {
namespace {

v1::VersionStatus::State ToProto(VersionState state) {
  switch (state) {
    case VersionState::kLoading:
      return v1::VersionStatus::LOADING;
    case VersionState::kReady:
      return v1::VersionStatus::READY;
    case VersionState::kUnloading:
      return v1::VersionStatus::UNLOADING;
    case VersionState::kFailed:
      return v1::VersionStatus::FAILED;
  }
  return v1::VersionStatus::STATE_UNSPECIFIED;
}

void Fill(const ModelStatusInfo& info, v1::ModelLifecycleStatus* out) {
  out->set_name(info.name);
  out->set_version_policy(info.version_policy);
  out->set_last_error(info.last_error);
  out->set_unloaded(info.unloaded);
  for (const VersionStatus& v : info.versions) {
    v1::VersionStatus* s = out->add_versions();
    s->set_version(v.version);
    s->set_state(ToProto(v.state));
    s->set_last_error(v.last_error);
    if (v.loaded_at != absl::InfinitePast()) {
      s->set_loaded_at_unix_ms(absl::ToUnixMillis(v.loaded_at));
    }
    s->set_load_seconds(absl::ToDoubleSeconds(v.load_duration));
    s->set_memory_bytes(v.memory_bytes);
  }
}

absl::Status NeedName(const std::string& name, const char* rpc) {
  if (!name.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(rpc, ": name is empty; set the model's directory name"));
}

}  // namespace

grpc::Status ModelServiceImpl::Answer(const absl::Status& result,
                                      const std::string& name,
                                      v1::ModelStatusResponse* response) const {
  if (!result.ok()) return ToGrpcStatus(result);
  absl::StatusOr<std::vector<ModelStatusInfo>> status =
      lifecycle_->Status(name);
  if (status.ok()) {
    for (const ModelStatusInfo& info : *status) {
      Fill(info, response->add_models());
    }
  }
  return ToGrpcStatus(result);
}

grpc::Status ModelServiceImpl::LoadModel(grpc::ServerContext* /*context*/,
                                         const v1::LoadModelRequest* request,
                                         v1::ModelStatusResponse* response) {
  absl::Status s = NeedName(request->name(), "LoadModel");
  if (s.ok()) s = lifecycle_->LoadModel(request->name());
  // gRPC sends no response body with an error: the status is in the
  // message, and ModelStatus shows the versions.
  return Answer(s, s.ok() ? request->name() : "", response);
}

grpc::Status ModelServiceImpl::UnloadModel(
    grpc::ServerContext* /*context*/, const v1::UnloadModelRequest* request,
    v1::ModelStatusResponse* response) {
  absl::Status s = NeedName(request->name(), "UnloadModel");
  if (s.ok()) s = lifecycle_->UnloadModel(request->name());
  return Answer(s, s.ok() ? request->name() : "", response);
}

grpc::Status ModelServiceImpl::ReloadRepository(
    grpc::ServerContext* /*context*/,
    const v1::ReloadRepositoryRequest* /*request*/,
    v1::ModelStatusResponse* response) {
  return Answer(lifecycle_->ReloadRepository(), "", response);
}

grpc::Status ModelServiceImpl::ModelStatus(
    grpc::ServerContext* /*context*/, const v1::ModelStatusRequest* request,
    v1::ModelStatusResponse* response) {
  absl::StatusOr<std::vector<ModelStatusInfo>> status =
      lifecycle_->Status(request->name());
  if (!status.ok()) return ToGrpcStatus(status.status());
  for (const ModelStatusInfo& info : *status) {
    Fill(info, response->add_models());
  }
  return grpc::Status::OK;
}

}  // namespace attn::server
