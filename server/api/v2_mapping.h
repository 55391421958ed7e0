// Mapping between the Open Inference Protocol (KServe v2) and attn.v1: a
// ModelInferRequest becomes the AttendRequest the attn.v1 path validates,
// budgets and batches, and the AttendResponse becomes a ModelInferResponse.
// Shared by the v2 gRPC service (inference_service.h) and the HTTP/REST
// service (http_service.h), so every transport has the same rules:
//
//   inputs      query (FP32|BF16|FP16, [B,Sq,D] or [Sq,D]), key, value (same
//               datatype and rank as query), attn_mask (FP32|BF16|FP16|BOOL,
//               [Sq,Sk] or [B,Sq,Sk]), key_lengths (INT32, [B] or [B,1]);
//   parameters  causal, return_attention_weights (bool);
//   outputs     output (FP32, the query's rank), attention_weights (FP32,
//               [B,H,Sq,Sk]; returned when the parameter asks for it or
//               when `outputs` names it).
//
//   absl::StatusOr<V2Request> v = FromInferRequest(request);
//   if (!v.ok()) return v.status();        // INVALID_ARGUMENT
//   ... attention.Prepare(deadline, v->attend, ...) ...
//   ToInferResponse(*v, std::move(attend_response), &infer_response);
//
// Errors are INVALID_ARGUMENT naming the input, the expected and the actual
// value (shape and byte-length checks of the tensors themselves are
// attn.v1's, whose messages name the input the same way).
// Free functions, no state: thread-safe.
#ifndef ATTNSERVE_SERVER_API_V2_MAPPING_H_
#define ATTNSERVE_SERVER_API_V2_MAPPING_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attn/v1/attention.pb.h"
#include "inference/grpc_service.pb.h"
#include "server/models/model_repository.h"

namespace attn::server {

// The name ServerMetadata reports, and the protocol extensions served.
inline constexpr char kV2ServerName[] = "attnserve";
inline constexpr char kV2Platform[] = "attnserve_attention";
inline constexpr const char* kV2Extensions[] = {
    "model_configuration", "binary_tensor_data", "parameters"};

// A v2 request converted to attn.v1, plus what the answer must hold.
struct V2Request {
  v1::AttendRequest attend;
  bool want_output = true;
  bool want_weights = false;
};

// Parses a v2 model version: "" is 0 (the newest), else a positive decimal
// integer. Errors: INVALID_ARGUMENT naming `what`.
absl::StatusOr<int64_t> ParseModelVersion(absl::string_view version);

// Converts `request` (tensors in raw_input_contents or typed contents).
// The model and version are copied unchecked (the repository lookup of
// Prepare answers NOT_FOUND). Errors: INVALID_ARGUMENT.
absl::StatusOr<V2Request> FromInferRequest(
    const inference::ModelInferRequest& request);

// Fills `out` from the attn.v1 answer (tensor bytes are moved into
// raw_output_contents).
void ToInferResponse(const V2Request& request, v1::AttendResponse response,
                     inference::ModelInferResponse* out);

// "FP32", "BF16", "FP16", "BOOL" for an attn.v1 dtype.
const char* V2DataTypeName(v1::DataType dtype);

// ModelMetadata / ModelConfig of `model` (every version of the same name is
// listed in `versions`, newest last).
void FillModelMetadata(const Model& model, const ModelRepository& repository,
                       inference::ModelMetadataResponse* out);
void FillModelConfig(const Model& model, inference::ModelConfig* out);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_V2_MAPPING_H_
