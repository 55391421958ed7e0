// attn.v1.ModelService: the admin RPCs of the model lifecycle (LoadModel,
// UnloadModel, ReloadRepository, ModelStatus) over a ModelLifecycle.
//
//   ModelServiceImpl admin(lifecycle);   // only with --enable_model_control
//   builder.RegisterService(&admin);
//
// A synchronous service: a load waits for its versions (read, pack,
// warm-up), which may take seconds; it occupies one of gRPC's sync-server
// threads, never a callback thread of the serving path. Admin calls are
// serialised by the lifecycle. Authentication is the server's: with
// --auth_token_file every method needs a bearer token.
//
// Thread-safety: as grpc::Service (called concurrently by gRPC).
// Ownership: `lifecycle` is not owned and must outlive the service.
#ifndef ATTNSERVE_SERVER_API_MODEL_SERVICE_H_
#define ATTNSERVE_SERVER_API_MODEL_SERVICE_H_

#include "attn/v1/model_service.grpc.pb.h"
#include "server/models/model_lifecycle.h"

namespace attn::server {

class ModelServiceImpl final : public v1::ModelService::Service {
 public:
  // REQUIRES: lifecycle != nullptr.
  explicit ModelServiceImpl(ModelLifecycle* lifecycle)
      : lifecycle_(lifecycle) {}

  grpc::Status LoadModel(grpc::ServerContext* context,
                         const v1::LoadModelRequest* request,
                         v1::ModelStatusResponse* response) override;
  grpc::Status UnloadModel(grpc::ServerContext* context,
                           const v1::UnloadModelRequest* request,
                           v1::ModelStatusResponse* response) override;
  grpc::Status ReloadRepository(grpc::ServerContext* context,
                                const v1::ReloadRepositoryRequest* request,
                                v1::ModelStatusResponse* response) override;
  grpc::Status ModelStatus(grpc::ServerContext* context,
                           const v1::ModelStatusRequest* request,
                           v1::ModelStatusResponse* response) override;

 private:
  // Fills `response` with the status of `name` (every model when empty);
  // returns `result` as a grpc::Status.
  grpc::Status Answer(const absl::Status& result, const std::string& name,
                      v1::ModelStatusResponse* response) const;

  ModelLifecycle* const lifecycle_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_MODEL_SERVICE_H_
