#include "client/loadgen/channels.h"

#include "client/service_config.h"
#include "grpc/grpc.h"

namespace attn::loadgen {

absl::StatusOr<std::vector<Connection>> MakeConnections(
    const std::string& target, int count, const ChannelSecurity& security) {
  std::vector<Connection> out;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    ApplyClientServiceConfig(/*retry=*/true, &args);
    args.SetInt("attn_loadgen.channel_index", i);
    Connection c;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        CreateChannel(target, security, args);
    if (!channel.ok()) return channel.status();
    c.channel = *std::move(channel);
    c.stub = v1::AttentionService::NewStub(c.channel);
    c.v2_stub = inference::GRPCInferenceService::NewStub(c.channel);
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace attn::loadgen
