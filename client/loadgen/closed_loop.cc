// The closed-loop LoadDriver: `concurrency` slots, each always busy.
#include <atomic>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/loadgen/load_driver.h"

namespace attn::loadgen {
namespace {

class ClosedLoopDriver final : public LoadDriver, public SlotListener {
 public:
  ClosedLoopDriver(int concurrency, const Options& options,
                   std::vector<Connection>* connections,
                   const PayloadSet& payloads, Recorder* recorder)
      : concurrency_(concurrency),
        options_(options),
        connections_(connections),
        payloads_(payloads),
        recorder_(recorder) {}

  void Start() override {
    for (int i = 0; i < concurrency_; ++i) {
      slots_.push_back(NewSlot(options_, connections_, i, this));
      slots_.back()->rng.seed(options_.seed * 1000003 + i);
    }
    {
      absl::MutexLock l(&mu_);
      active_ = concurrency_;
    }
    for (auto& slot : slots_) SendNext(slot.get());
  }

  void Stop(absl::Duration drain) override {
    stopping_.store(true);
    recorder_->Stop();
    auto idle = [this]()
                    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
    bool drained;
    {
      absl::MutexLock l(&mu_);
      drained = mu_.AwaitWithTimeout(absl::Condition(&idle), drain);
    }
    if (!drained) {
      for (auto& slot : slots_) slot->Cancel();
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(&idle));  // cancelled calls end promptly
    }
    ShutdownSlots(slots_);
  }

  void OnComplete(Slot* slot, CallOutcome outcome) override {
    outcome.latency_ns = SteadyNowNs() - slot->pending.start_ns;
    outcome.tokens = slot->pending.tokens;
    std::shared_ptr<Window> window = std::move(slot->pending.window);
    window->Complete(outcome);
    SendNext(slot);
  }

 private:
  void SendNext(Slot* slot) {
    if (!stopping_.load() && slot->Alive()) {
      const Payload& payload = payloads_.Pick(slot->rng);
      std::shared_ptr<Window> window = recorder_->AddSend(0, false);
      if (window != nullptr) {
        slot->pending = {std::move(window), SteadyNowNs(), payload.tokens};
        slot->Send(&payload.request);
        return;
      }
    }
    absl::MutexLock l(&mu_);
    --active_;
  }

  const int concurrency_;
  const Options& options_;
  std::vector<Connection>* const connections_;
  const PayloadSet& payloads_;
  Recorder* const recorder_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<bool> stopping_{false};
  absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;  // slots with a request outstanding
};

}  // namespace

std::unique_ptr<LoadDriver> MakeClosedLoopDriver(
    int concurrency, const Options& options,
    std::vector<Connection>* connections, const PayloadSet& payloads,
    Recorder* recorder) {
  return std::make_unique<ClosedLoopDriver>(concurrency, options, connections,
                                            payloads, recorder);
}

}  // namespace attn::loadgen
