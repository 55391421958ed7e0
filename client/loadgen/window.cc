#include "client/loadgen/window.h"

#include "absl/time/clock.h"

namespace attn::loadgen {
namespace {

double PerSecond(int64_t n, absl::Duration d) {
  const double s = absl::ToDoubleSeconds(d);
  return s > 0 ? static_cast<double>(n) / s : 0.0;
}

}  // namespace

void WindowResult::Merge(const WindowResult& other) {
  sent += other.sent;
  ok += other.ok;
  errors += other.errors;
  late_sends += other.late_sends;
  tokens_ok += other.tokens_ok;
  for (int i = 0; i < kNumStatusCodes; ++i) {
    status_counts[i] += other.status_counts[i];
  }
  latency_ns.Merge(other.latency_ns);
  error_latency_ns.Merge(other.error_latency_ns);
  send_lag_ns.Merge(other.send_lag_ns);
  sum_queue_us += other.sum_queue_us;
  sum_compute_us += other.sum_compute_us;
  sum_batch_requests += other.sum_batch_requests;
  duration += other.duration;
  windows += other.windows;
}

double WindowResult::RequestsPerSecond() const {
  return PerSecond(ok, duration);
}
double WindowResult::SentPerSecond() const { return PerSecond(sent, duration); }
double WindowResult::TokensPerSecond() const {
  return PerSecond(tokens_ok, duration);
}

Window::Window(bool errors_in_latency, int64_t max_sends)
    : errors_in_latency_(errors_in_latency),
      max_sends_(max_sends),
      start_(absl::Now()) {
  result_.windows = 1;
}

bool Window::TryAddSend(int64_t send_lag_ns, bool late) {
  absl::MutexLock l(&mu_);
  if (closed_ || (max_sends_ > 0 && result_.sent >= max_sends_)) return false;
  ++result_.sent;
  ++inflight_;
  if (late) ++result_.late_sends;
  result_.send_lag_ns.Record(send_lag_ns);
  if (max_sends_ > 0 && result_.sent == max_sends_) {
    closed_ = true;
    result_.duration = absl::Now() - start_;
  }
  return true;
}

void Window::Complete(const CallOutcome& outcome) {
  absl::MutexLock l(&mu_);
  --inflight_;
  const int code = static_cast<int>(outcome.code);
  ++result_.status_counts[code >= 0 && code < kNumStatusCodes ? code : 2];
  if (outcome.code == grpc::StatusCode::OK) {
    ++result_.ok;
    result_.tokens_ok += outcome.tokens;
    result_.sum_queue_us += outcome.queue_us;
    result_.sum_compute_us += outcome.compute_us;
    result_.sum_batch_requests += outcome.batch_requests;
    result_.latency_ns.Record(outcome.latency_ns);
  } else {
    ++result_.errors;
    result_.error_latency_ns.Record(outcome.latency_ns);
    if (errors_in_latency_) result_.latency_ns.Record(outcome.latency_ns);
  }
}

void Window::Close() {
  absl::MutexLock l(&mu_);
  if (closed_) return;
  closed_ = true;
  result_.duration = absl::Now() - start_;
}

bool Window::Full() const {
  absl::MutexLock l(&mu_);
  return max_sends_ > 0 && result_.sent >= max_sends_;
}

bool Window::WaitDrained(absl::Time deadline) {
  absl::MutexLock l(&mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ && inflight_ == 0;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&drained), deadline);
}

WindowResult Window::Snapshot() const {
  absl::MutexLock l(&mu_);
  WindowResult copy = result_;
  if (!closed_) copy.duration = absl::Now() - start_;
  return copy;
}

absl::Duration Window::Elapsed() const { return absl::Now() - start_; }

}  // namespace attn::loadgen
