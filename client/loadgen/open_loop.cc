// The open-loop LoadDriver: a scheduler thread sends at intended times
// fixed in advance (ArrivalSchedule); latency counts from those times.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/loadgen/arrival_schedule.h"
#include "client/loadgen/load_driver.h"

namespace attn::loadgen {
namespace {

class OpenLoopDriver final : public LoadDriver, public SlotListener {
 public:
  OpenLoopDriver(double rate, const Options& options,
                 std::vector<Connection>* connections,
                 const PayloadSet& payloads, Recorder* recorder)
      : rate_(rate),
        options_(options),
        connections_(connections),
        payloads_(payloads),
        recorder_(recorder),
        late_ns_(absl::ToInt64Nanoseconds(options.late_threshold)) {}

  void Start() override {
    start_ns_ = SteadyNowNs();
    thread_ = std::thread([this] { Run(); });
  }

  void Stop(absl::Duration drain) override {
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
    }
    stop_flag_.store(true);
    thread_.join();
    recorder_->Stop();
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return outstanding_ == 0;
    };
    bool ok;
    {
      absl::MutexLock l(&mu_);
      ok = mu_.AwaitWithTimeout(absl::Condition(&drained), drain);
    }
    if (!ok) {
      for (auto& slot : all_) slot->Cancel();
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(&drained));
    }
    ShutdownSlots(all_);
  }

  void OnComplete(Slot* slot, CallOutcome outcome) override {
    outcome.latency_ns = SteadyNowNs() - slot->pending.start_ns;
    outcome.tokens = slot->pending.tokens;
    std::shared_ptr<Window> window = std::move(slot->pending.window);
    window->Complete(outcome);
    absl::MutexLock l(&mu_);
    --outstanding_;
    idle_.push_back(slot);
  }

 private:
  void Run() {
    ArrivalSchedule schedule(options_.arrival, rate_, options_.seed);
    std::mt19937_64 rng(options_.seed);
    while (!stop_flag_.load()) {
      const int64_t intended = start_ns_ + schedule.Next();
      if (!SleepUntil(intended)) return;
      Slot* slot = Acquire();
      if (slot == nullptr) return;
      const int64_t lag = SteadyNowNs() - intended;
      std::shared_ptr<Window> window = recorder_->AddSend(lag, lag > late_ns_);
      if (window == nullptr) {
        Release(slot);
        return;
      }
      const Payload& payload = payloads_.Pick(rng);
      slot->pending = {std::move(window), intended, payload.tokens};
      slot->Send(&payload.request);
    }
  }

  // False when stopping.
  bool SleepUntil(int64_t t_ns) {
    constexpr int64_t kChunkNs = 50'000'000;  // re-check stop_flag_ often
    for (;;) {
      if (stop_flag_.load()) return false;
      const int64_t left = t_ns - SteadyNowNs();
      if (left <= 0) return true;
      std::this_thread::sleep_for(
          std::chrono::nanoseconds(std::min(left, kChunkNs)));
    }
  }

  // An idle live slot, a new one (up to --max_inflight), or nullptr when
  // stopping. Counts the slot as outstanding.
  Slot* Acquire() {
    absl::MutexLock l(&mu_);
    for (;;) {
      while (!idle_.empty()) {
        Slot* slot = idle_.back();
        idle_.pop_back();
        if (slot->Alive()) {
          ++outstanding_;
          return slot;
        }
        --live_;  // a stream that ended: replace it
      }
      if (live_ < options_.max_inflight) {
        ++live_;
        ++outstanding_;
        const int index = static_cast<int>(all_.size());
        mu_.Unlock();  // opening a stream must not hold the lock
        std::unique_ptr<Slot> slot =
            NewSlot(options_, connections_, index, this);
        mu_.Lock();
        all_.push_back(std::move(slot));
        return all_.back().get();
      }
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !idle_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return nullptr;
    }
  }

  void Release(Slot* slot) {
    absl::MutexLock l(&mu_);
    --outstanding_;
    idle_.push_back(slot);
  }

  const double rate_;
  const Options& options_;
  std::vector<Connection>* const connections_;
  const PayloadSet& payloads_;
  Recorder* const recorder_;
  const int64_t late_ns_;
  int64_t start_ns_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_flag_{false};

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // all_ is appended by the scheduler thread only and read by Stop() after
  // it joined that thread.
  std::vector<std::unique_ptr<Slot>> all_;
  std::vector<Slot*> idle_ ABSL_GUARDED_BY(mu_);
  int live_ ABSL_GUARDED_BY(mu_) = 0;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

std::unique_ptr<LoadDriver> MakeOpenLoopDriver(
    double rate, const Options& options, std::vector<Connection>* connections,
    const PayloadSet& payloads, Recorder* recorder) {
  return std::make_unique<OpenLoopDriver>(rate, options, connections, payloads,
                                          recorder);
}

}  // namespace attn::loadgen
