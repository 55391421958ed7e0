// KServe v2 slots of attn_loadgen (--protocol): the same attention request
// as attn.v1's, sent as an inference.GRPCInferenceService/ModelInfer call
// (V2GrpcSlot) or as POST /v2/models/<m>/infer over HTTP/1.1 keep-alive
// (HttpSlot), with the tensors in the binary tensor data extension or in
// JSON `data`. The converted request (or HTTP body) is built once per
// payload and kept by the slot.
//
// Outcomes carry the status code only (v2 answers have no server timing);
// an HTTP status maps back to the gRPC code the server used (200 OK, 400
// INVALID_ARGUMENT, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE,
// 504 DEADLINE_EXCEEDED, 401/403 UNAUTHENTICATED/PERMISSION_DENIED; a
// broken connection is UNAVAILABLE).
//
// Thread-safety: as Slot (slot.h). An HttpSlot owns one thread and one TCP
// connection; its listener runs on that thread.
#ifndef ATTNSERVE_CLIENT_LOADGEN_V2_SLOT_H_
#define ATTNSERVE_CLIENT_LOADGEN_V2_SLOT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "attn/v1/attention.pb.h"
#include "client/loadgen/slot.h"
#include "inference/grpc_service.grpc.pb.h"

namespace attn::loadgen {

// The v2 request of an attn.v1 one: query/key/value as raw tensors, causal
// and return_attention_weights as parameters.
inference::ModelInferRequest ToModelInferRequest(
    const v1::AttendRequest& request);

// The REST body of `request`; `*header_length` is the JSON length (binary)
// or -1 (JSON data, FLOAT32 only). Errors: INVALID_ARGUMENT for JSON with
// another dtype.
absl::StatusOr<std::string> ToHttpBody(const v1::AttendRequest& request,
                                       bool binary, int64_t* header_length);

// REQUIRES: stub and listener outlive the slot. deadline 0 = none.
std::unique_ptr<Slot> MakeV2GrpcSlot(
    inference::GRPCInferenceService::Stub* stub, SlotListener* listener,
    absl::Duration deadline);
// `host_port` is "host:port" (plaintext); `auth_token` empty = none.
std::unique_ptr<Slot> MakeHttpSlot(const std::string& host_port, bool binary,
                                   const std::string& auth_token,
                                   SlotListener* listener);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_V2_SLOT_H_
