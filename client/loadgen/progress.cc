#include "client/loadgen/progress.h"

#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace attn::loadgen {

ProgressLine::ProgressLine(bool enabled) : enabled_(enabled) {
  if (enabled_) thread_ = std::thread([this] { Loop(); });
}

ProgressLine::~ProgressLine() {
  if (!enabled_) return;
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();
  Clear();
}

void ProgressLine::Set(const std::string& label,
                       std::shared_ptr<Recorder> recorder) {
  if (!enabled_) return;
  absl::MutexLock l(&mu_);
  label_ = label;
  recorder_ = std::move(recorder);
  step_start_ = absl::Now();
}

void ProgressLine::Clear() {
  if (!enabled_) return;
  absl::MutexLock l(&mu_);
  if (drawn_) {
    std::fputs("\r\033[K", stdout);
    std::fflush(stdout);
    drawn_ = false;
  }
}

void ProgressLine::Loop() {
  absl::MutexLock l(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping),
                               absl::Milliseconds(500))) {
    Draw();
  }
}

void ProgressLine::Draw() {
  if (recorder_ == nullptr) return;
  const WindowResult w = recorder_->Current()->Snapshot();
  const std::string line = absl::StrFormat(
      "\r\033[K%s  %5.1fs  %8.1f req/s  p99 %8.2f ms  errors %d", label_,
      absl::ToDoubleSeconds(absl::Now() - step_start_), w.RequestsPerSecond(),
      static_cast<double>(w.latency_ns.Quantile(0.99)) / 1e6, w.errors);
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  drawn_ = true;
}

}  // namespace attn::loadgen
