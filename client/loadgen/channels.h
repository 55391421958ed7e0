// Channels of attn_loadgen: --connections distinct gRPC channels to one
// target, each with its own subchannel pool (and a unique argument) so that
// each is a separate HTTP/2 connection rather than a shared one.
#ifndef ATTNSERVE_CLIENT_LOADGEN_CHANNELS_H_
#define ATTNSERVE_CLIENT_LOADGEN_CHANNELS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attn/v1/attention.grpc.pb.h"
#include "client/channel_credentials.h"
#include "grpcpp/grpcpp.h"
#include "inference/grpc_service.grpc.pb.h"

namespace attn::loadgen {

struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::AttentionService::Stub> stub;
  // The KServe v2 service on the same channel (--protocol=v2).
  std::unique_ptr<inference::GRPCInferenceService::Stub> v2_stub;
};

// REQUIRES: count >= 1. Does not connect (the first call does). Errors:
// those of CreateChannel (bad TLS files).
absl::StatusOr<std::vector<Connection>> MakeConnections(
    const std::string& target, int count, const ChannelSecurity& security = {});

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_CHANNELS_H_
