#include "client/loadgen/load_driver.h"

#include "client/loadgen/v2_slot.h"

namespace attn::loadgen {

std::unique_ptr<LoadDriver> MakeLoadDriver(const LoadLevel& level,
                                           const Options& options,
                                           std::vector<Connection>* connections,
                                           const PayloadSet& payloads,
                                           Recorder* recorder) {
  if (level.open_loop) {
    return MakeOpenLoopDriver(level.rate, options, connections, payloads,
                              recorder);
  }
  return MakeClosedLoopDriver(level.concurrency, options, connections, payloads,
                              recorder);
}

std::unique_ptr<Slot> NewSlot(const Options& options,
                              std::vector<Connection>* connections, int i,
                              SlotListener* listener) {
  Connection& connection = (*connections)[i % connections->size()];
  switch (options.protocol) {
    case WireProtocol::kV2Grpc:
      return MakeV2GrpcSlot(connection.v2_stub.get(), listener,
                            options.deadline);
    case WireProtocol::kHttpBinary:
    case WireProtocol::kHttpJson:
      return MakeHttpSlot(options.http_target,
                          options.protocol == WireProtocol::kHttpBinary,
                          options.security.auth_token, listener);
    default:
      break;
  }
  v1::AttentionService::Stub* stub = connection.stub.get();
  if (options.rpc == RpcKind::kStream) return MakeStreamSlot(stub, listener);
  return MakeUnarySlot(stub, listener, options.deadline);
}

}  // namespace attn::loadgen
