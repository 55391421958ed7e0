#include "server/api/v2_infer.h"

#include <utility>

#include "server/api/v2_mapping.h"

namespace attn::server {

absl::Status StartV2Infer(const AttentionServiceImpl& attention,
                          Protocol protocol,
                          const inference::ModelInferRequest& request,
                          absl::Time deadline,
                          std::shared_ptr<CancellationFlag> cancelled,
                          InflightBudget::Reservation* reservation,
                          V2Done done) {
  absl::StatusOr<V2Request> converted;
  if (request.model_name().empty()) {
    converted = absl::InvalidArgumentError(
        "model_name is empty; name the model (GET /v2/models/... or "
        "ModelMetadata show it; attn_cli models lists them)");
  } else {
    converted = FromInferRequest(request);
  }
  v1::AttendRequest empty;
  RequestMetrics metrics = attention.StartRequestMetrics(
      converted.ok() ? converted->attend : empty, protocol);
  if (!converted.ok()) {
    metrics.SetModel(request.model_name());
    metrics.Finish(converted.status().code(), /*reached_executor=*/false);
    return converted.status();
  }
  BatchTask task;
  AttentionServiceImpl::ResponseSpec spec;
  absl::Status status =
      attention.Prepare(deadline, converted->attend, &task, &spec, reservation);
  if (status.ok()) {
    task.cancelled = std::move(cancelled);
    // Only what the answer needs travels with the task (the converted
    // tensors are in task.job now).
    V2Request outputs;
    outputs.want_output = converted->want_output;
    outputs.want_weights = converted->want_weights;
    task.done = [outputs = std::move(outputs), spec = std::move(spec), metrics,
                 done = std::move(done)](absl::Status s,
                                         AttentionResult result) mutable {
      inference::ModelInferResponse response;
      if (s.ok()) {
        v1::AttendResponse attend;
        AttentionServiceImpl::FillResponse(spec, std::move(result), &attend);
        ToInferResponse(outputs, std::move(attend), &response);
      }
      metrics.Finish(s.code(), /*reached_executor=*/true);
      done(std::move(s), std::move(response));
    };
    status = attention.batcher()->Submit(std::move(task));
    if (status.ok()) return status;
  }
  metrics.Finish(status.code(), /*reached_executor=*/false);
  return status;
}

}  // namespace attn::server
