#include "client/loadgen/slot.h"

#include <chrono>

namespace attn::loadgen {

grpc::ClientContext* FreshContext(absl::Mutex* mu,
                                  std::unique_ptr<grpc::ClientContext>* context,
                                  absl::Duration deadline) {
  grpc::ClientContext* fresh;
  {
    absl::MutexLock l(mu);
    *context = std::make_unique<grpc::ClientContext>();
    fresh = context->get();
  }
  if (deadline > absl::ZeroDuration()) {
    fresh->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoNanoseconds(deadline));
  }
  return fresh;
}

void ShutdownSlots(const std::vector<std::unique_ptr<Slot>>& slots) {
  for (const auto& slot : slots) slot->Shutdown();
  for (const auto& slot : slots) {
    if (!slot->WaitDone(absl::Now() + absl::Seconds(10))) {
      slot->Cancel();
      slot->WaitDone(absl::InfiniteFuture());
    }
  }
}

}  // namespace attn::loadgen
