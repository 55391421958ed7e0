// The KServe v2 / Open Inference Protocol gRPC service
// (inference.GRPCInferenceService, proto/inference/grpc_service.proto) on
// the same port as attn.v1. Inference goes through StartV2Infer, i.e. the
// attn.v1 path: same validation, in-flight budget, batcher (a v2 and an
// attn.v1 request may share a kernel call), deadlines and metrics
// (attn_protocol_requests_total{protocol="kserve_grpc"}).
//
//   InferenceServiceImpl v2(&attention_service);
//   builder.RegisterService(&v2);
//   v2.SetHealth(&health);  // readiness: server, per model, drain
//   ...
//   v2.SetReady(false);   // shutting down: ServerReady/ModelReady false
//
// Readiness: ServerReady is true while SetReady(true) (the default) and
// the HealthStatus (when set) says the server is ready and not draining;
// ModelReady additionally needs the model's own readiness there (the
// lifecycle's: a model being reloaded or unloaded turns false). Drain:
// ModelInfer calls are admitted, parked and rejected exactly as attn.v1's
// Attend (AttentionServiceImpl::AdmitUnary), so a drain loses none.
//
// RPCs: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata,
// ModelInfer, ModelStreamInfer (Triton's streaming extension: answers in
// completion order, each with the request's id; a failed request answers
// with error_message and the stream goes on) and ModelConfig (Triton's).
// Errors: INVALID_ARGUMENT (datatype, shape, byte size, unknown input or
// output, missing query, bad version string), NOT_FOUND (unknown model or
// version), UNAVAILABLE (queue full, server shutting down), and attn.v1's
// DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED.
//
// Thread-safety: all methods may be called concurrently by gRPC.
#ifndef ATTNSERVE_SERVER_API_INFERENCE_SERVICE_H_
#define ATTNSERVE_SERVER_API_INFERENCE_SERVICE_H_

#include <atomic>

#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/api/attention_service.h"
#include "server/api/health_status.h"

namespace attn::server {

class InferenceServiceImpl final
    : public inference::GRPCInferenceService::CallbackService {
 public:
  // `attention` is not owned and must outlive every call.
  explicit InferenceServiceImpl(AttentionServiceImpl* attention);

  // Readiness reported by ServerReady and ModelReady. Default: true.
  void SetReady(bool ready) { ready_.store(ready); }
  // `health` (not owned, may be null, must outlive every call) adds its
  // server and per-model readiness.
  void SetHealth(const HealthStatus* health) { health_.store(health); }
  bool ready() const;
  bool model_ready(const std::string& model) const;

  grpc::ServerUnaryReactor* ServerLive(
      grpc::CallbackServerContext* context,
      const inference::ServerLiveRequest* request,
      inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(
      grpc::CallbackServerContext* context,
      const inference::ServerReadyRequest* request,
      inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(
      grpc::CallbackServerContext* context,
      const inference::ModelReadyRequest* request,
      inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(
      grpc::CallbackServerContext* context,
      const inference::ServerMetadataRequest* request,
      inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(
      grpc::CallbackServerContext* context,
      const inference::ModelMetadataRequest* request,
      inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelConfig(
      grpc::CallbackServerContext* context,
      const inference::ModelConfigRequest* request,
      inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(
      grpc::CallbackServerContext* context,
      const inference::ModelInferRequest* request,
      inference::ModelInferResponse* response) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest,
                          inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;

  const AttentionServiceImpl& attention() const { return *attention_; }

 private:
  AttentionServiceImpl* const attention_;
  std::atomic<bool> ready_{true};
  std::atomic<const HealthStatus*> health_{nullptr};
};

// The model a v2 metadata call names: `name` and the version string ("" =
// newest). Errors: INVALID_ARGUMENT (empty name, bad version), NOT_FOUND.
absl::StatusOr<std::shared_ptr<const Model>> FindV2Model(
    const ModelRepository& repository, const std::string& name,
    const std::string& version);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_INFERENCE_SERVICE_H_
