// One KServe v2 inference run on the attn.v1 path: converts the request
// (v2_mapping.h), takes its memory from the in-flight budget, validates it
// and submits it to the shared Batcher through AttentionServiceImpl, so v2
// and attn.v1 requests share validation, budget, deadlines, metrics and
// batches. Used by the v2 gRPC service and the HTTP/REST service.
//
//   InflightBudget::Reservation reservation;   // hold until answered
//   absl::Status s = StartV2Infer(attention, Protocol::kKserveGrpc, request,
//                                 deadline, cancelled, &reservation,
//                                 [](absl::Status s, ModelInferResponse r) {
//                                   ...  // on the executor thread
//                                 });
//   if (!s.ok()) ...;   // `done` will not be called
//
// Thread-safety: a free function over const state; call it from any thread.
#ifndef ATTNSERVE_SERVER_API_V2_INFER_H_
#define ATTNSERVE_SERVER_API_V2_INFER_H_

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "inference/grpc_service.pb.h"
#include "server/api/attention_service.h"
#include "server/observability/metrics.h"
#include "server/serving/inflight_budget.h"

namespace attn::server {

// Called once with the answer (status OK) or the error of a request that
// was submitted; runs on the executor thread and must not block.
using V2Done = std::function<void(absl::Status, inference::ModelInferResponse)>;

// Starts `request`. Returns OK once it is queued: `done` is then called
// exactly once. Returns an error (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE,
// RESOURCE_EXHAUSTED) when it was refused before queueing: `done` is never
// called. Either way the request is counted in the metrics under
// `protocol`. `reservation` receives the request's share of the in-flight
// budget; the caller keeps it until the answer has been sent.
absl::Status StartV2Infer(const AttentionServiceImpl& attention,
                          Protocol protocol,
                          const inference::ModelInferRequest& request,
                          absl::Time deadline,
                          std::shared_ptr<CancellationFlag> cancelled,
                          InflightBudget::Reservation* reservation,
                          V2Done done);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_V2_INFER_H_
