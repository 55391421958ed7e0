// The session side of AttentionService: which AttendRequests are session
// steps, the checks only they get, the caller's session scope, and the
// EndSession RPC (AttentionServiceImpl::BeginSessionStep and ::EndSession
// are defined in session_requests.cc).
//
// Free functions, no state: thread-safe.
#ifndef ATTNSERVE_SERVER_API_SESSION_REQUESTS_H_
#define ATTNSERVE_SERVER_API_SESSION_REQUESTS_H_

#include <string>

#include "absl/status/status.h"
#include "attn/v1/attention.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/models/model_repository.h"

namespace attn::server {

// Longest session id accepted, bytes.
inline constexpr size_t kMaxSessionIdBytes = 256;

// True when `request` uses any session field (then it must be a valid
// session step).
bool IsSessionRequest(const v1::AttendRequest& request);

// The checks a session step gets before its tensors are decoded.
// Errors: INVALID_ARGUMENT naming the field (causal false, key, value,
// attn_mask, key_lengths, return_attention_weights, batch != 1, an empty
// or overlong session_id, a negative session_position).
absl::Status CheckSessionRequest(const v1::AttendRequest& request);

// The scope a caller's session ids live in: the bearer token it presented
// when `by_token` (auth on), else "" (one scope for every caller).
std::string SessionScope(const grpc::CallbackServerContext& context,
                         bool by_token);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_SESSION_REQUESTS_H_
