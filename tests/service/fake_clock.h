// A manually advanced Clock for deterministic batcher tests.
#ifndef ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_
#define ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"

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

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attn::server::testing

#endif  // ATTNSERVE_TESTS_SERVICE_FAKE_CLOCK_H_
