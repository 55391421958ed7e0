// The gRPC service config every attnserve client channel uses: round_robin
// over all the addresses a target resolves to ("ipv4:A,B,C", "dns:///name"),
// and, unless turned off, retries of calls that fail with UNAVAILABLE (a
// replica going away). Attend is idempotent (no server state between calls),
// so a retried call can never be applied twice with a different effect.
//
// Stateless free functions; thread-safe.
#ifndef ATTN_CLIENT_SERVICE_CONFIG_H_
#define ATTN_CLIENT_SERVICE_CONFIG_H_

#include <string>

#include "grpcpp/support/channel_arguments.h"

namespace attn {

// Most attempts of one call (the first one included) under the retry policy.
inline constexpr int kMaxCallAttempts = 5;

// The service config JSON: round_robin, plus the UNAVAILABLE retry policy for
// attn.v1.AttentionService and grpc.health.v1.Health when `retry`.
std::string ClientServiceConfigJson(bool retry);

// Sets that service config on `args` and turns gRPC retries on or off.
void ApplyClientServiceConfig(bool retry, grpc::ChannelArguments* args);

}  // namespace attn

#endif  // ATTN_CLIENT_SERVICE_CONFIG_H_
