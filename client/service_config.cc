#include "client/service_config.h"

#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"

namespace attn {

std::string ClientServiceConfigJson(bool retry) {
  std::string config = R"({"loadBalancingConfig": [{"round_robin": {}}])";
  if (retry) {
    absl::StrAppend(
        &config, R"(, "methodConfig": [{"name": [)",
        R"({"service": "attn.v1.AttentionService"}, )",
        R"({"service": "grpc.health.v1.Health"}], )",
        R"("retryPolicy": {"maxAttempts": )", kMaxCallAttempts,
        R"(, "initialBackoff": "0.05s", "maxBackoff": "1s", )",
        R"("backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}], )",
        // Retries stop while more than half of 100 tokens are spent (one per
        // failure, 0.1 back per success): no retry storm on an overloaded
        // fleet (a full queue is UNAVAILABLE too).
        R"("retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1})");
  }
  absl::StrAppend(&config, "}");
  return config;
}

void ApplyClientServiceConfig(bool retry, grpc::ChannelArguments* args) {
  args->SetServiceConfigJSON(ClientServiceConfigJson(retry));
  args->SetInt(GRPC_ARG_ENABLE_RETRIES, retry ? 1 : 0);
}

}  // namespace attn
