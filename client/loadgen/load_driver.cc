#include "client/loadgen/load_driver.h"

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
  v1::AttentionService::Stub* stub =
      (*connections)[i % connections->size()].stub.get();
  if (options.rpc == RpcKind::kStream) return MakeStreamSlot(stub, listener);
  return MakeUnarySlot(stub, listener, options.deadline);
}

}  // namespace attn::loadgen
