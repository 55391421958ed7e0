#include "client/loadgen/slot.h"

namespace attn::loadgen {

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
