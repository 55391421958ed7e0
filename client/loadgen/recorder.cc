#include "client/loadgen/recorder.h"

namespace attn::loadgen {

Recorder::Recorder(bool errors_in_latency)
    : errors_in_latency_(errors_in_latency),
      current_(std::make_shared<Window>(errors_in_latency, 0)) {}

std::shared_ptr<Window> Recorder::AddSend(int64_t send_lag_ns, bool late) {
  absl::MutexLock l(&mu_);
  if (stopped_) return nullptr;
  if (!current_->TryAddSend(send_lag_ns, late)) {
    // Only a count-limited window refuses a send while not stopped.
    full_.push_back(current_);
    current_ = std::make_shared<Window>(errors_in_latency_, max_sends_);
    current_->TryAddSend(send_lag_ns, late);
  }
  std::shared_ptr<Window> window = current_;
  if (current_->Full()) {
    full_.push_back(current_);
    current_ = std::make_shared<Window>(errors_in_latency_, max_sends_);
  }
  return window;
}

std::shared_ptr<Window> Recorder::Rotate(int64_t max_sends) {
  absl::MutexLock l(&mu_);
  std::shared_ptr<Window> closed = current_;
  closed->Close();
  max_sends_ = max_sends;
  current_ = std::make_shared<Window>(errors_in_latency_, max_sends_);
  return closed;
}

std::shared_ptr<Window> Recorder::WaitFull(absl::Time deadline) {
  absl::MutexLock l(&mu_);
  auto has_full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !full_.empty();
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&has_full), deadline)) {
    return nullptr;
  }
  std::shared_ptr<Window> w = full_.front();
  full_.pop_front();
  return w;
}

std::shared_ptr<Window> Recorder::Current() const {
  absl::MutexLock l(&mu_);
  return current_;
}

std::shared_ptr<Window> Recorder::Stop() {
  absl::MutexLock l(&mu_);
  stopped_ = true;
  current_->Close();
  return current_;
}

}  // namespace attn::loadgen
