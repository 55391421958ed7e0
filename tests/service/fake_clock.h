// A manually advanced Clock for deterministic batcher tests.
#ifndef ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_
#define ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/serving/clock.h"

namespace attn::server::testing {

// Time stands still until Advance() is called. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000))
      : now_(start) {}

  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }

  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

  // Waits on `mu` until `condition` holds or the FAKE time reaches
  // `deadline` (Advance() past it). Re-checks every millisecond of real
  // time, so outcomes depend only on Advance() calls and the condition.
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) const override {
    {
      absl::MutexLock lock(&mu_);
      ++waiters_;
      last_wait_deadline_ = deadline;
    }
    bool satisfied = condition.Eval();
    while (!satisfied && Now() < deadline) {
      satisfied = mu->AwaitWithTimeout(condition, absl::Milliseconds(1));
    }
    absl::MutexLock lock(&mu_);
    --waiters_;
    ++completed_waits_;
    return satisfied;
  }

  // Blocks (real time) until at least `n` threads are inside
  // AwaitWithDeadline().
  void AwaitWaiters(int n) const {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return waiters_ >= n;
    };
    mu_.Await(absl::Condition(&enough));
  }
  // The deadline passed to the latest AwaitWithDeadline() call.
  absl::Time last_wait_deadline() const {
    absl::MutexLock lock(&mu_);
    return last_wait_deadline_;
  }
  // AwaitWithDeadline() calls that returned.
  int completed_waits() const {
    absl::MutexLock lock(&mu_);
    return completed_waits_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  mutable int waiters_ ABSL_GUARDED_BY(mu_) = 0;
  mutable int completed_waits_ ABSL_GUARDED_BY(mu_) = 0;
  mutable absl::Time last_wait_deadline_ ABSL_GUARDED_BY(mu_) =
      absl::InfinitePast();
};

}  // namespace attn::server::testing

#endif  // ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_
