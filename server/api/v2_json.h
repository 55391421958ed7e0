// The JSON (and binary tensor data extension) encoding of KServe v2
// inference requests and responses, as the HTTP/REST service speaks it:
//
//   POST /v2/models/demo/infer
//   {"id": "1", "parameters": {"causal": true},
//    "inputs": [{"name": "query", "datatype": "FP32", "shape": [1, 2, 256],
//                "data": [[...], [...]]}],            // flat or nested
//    "outputs": [{"name": "output", "parameters": {"binary_data": true}}]}
//
// Binary extension: with the header Inference-Header-Content-Length: N the
// body is N bytes of JSON followed by the raw little-endian bytes of every
// input whose parameters hold "binary_data_size", in input order. Outputs
// are sent binary when their parameters say "binary_data": true or the
// request's parameters say "binary_data_output": true; their bytes follow
// the JSON of the answer in output order (the answer then carries the same
// header).
//
// Errors: INVALID_ARGUMENT naming the field. Free functions: thread-safe.
#ifndef ATTNSERVE_SERVER_API_V2_JSON_H_
#define ATTNSERVE_SERVER_API_V2_JSON_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"

namespace attn::server {

// A parsed JSON infer request and how its answer must be encoded.
struct JsonInferRequest {
  inference::ModelInferRequest request;  // tensors in raw_input_contents
  bool all_outputs_binary = false;       // "binary_data_output": true
  // Outputs named in "outputs" with "binary_data": true.
  std::vector<std::string> binary_outputs;
};

// Parses `body`; `header_length` is the Inference-Header-Content-Length
// value (nullopt: the whole body is JSON). model_name/model_version are set
// from the URL by the caller.
absl::StatusOr<JsonInferRequest> ParseJsonInferRequest(
    absl::string_view body, std::optional<int64_t> header_length);

// Encodes `response`. Returns the body; `*header_length` is set to the JSON
// length when binary outputs follow it, else to nullopt.
std::string EncodeJsonInferResponse(const JsonInferRequest& request,
                                    const inference::ModelInferResponse& r,
                                    std::optional<int64_t>* header_length);

// {"name": ..., "versions": [...], "platform": ..., "inputs": [...],
// "outputs": [...]} of a ModelMetadataResponse.
std::string ModelMetadataJson(const inference::ModelMetadataResponse& m);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_V2_JSON_H_
