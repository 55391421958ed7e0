// Injectable time source, so that deadline logic can be tested without
// sleeping (as TensorFlow Serving's Env).
//
//   Clock* clock = Clock::Real();
//   absl::Time now = clock->Now();
#ifndef ATTNSERVE_SERVER_SERVING_CLOCK_H_
#define ATTNSERVE_SERVER_SERVING_CLOCK_H_

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace attn::server {

// A source of wall-clock time. Implementations must be thread-safe: Now() is
// called from gRPC threads and from the executor thread.
class Clock {
 public:
  virtual ~Clock() = default;

  // The current time, comparable with gRPC deadlines (wall clock).
  virtual absl::Time Now() const = 0;

  // Blocks until `condition` holds or Now() >= `deadline`, whichever comes
  // first, releasing `mu` meanwhile; returns the condition's value. Lets the
  // batcher wait for a batch to fill on this clock's time (a fake clock makes
  // that wait deterministic). Default: mu->AwaitWithDeadline (wall clock).
  // REQUIRES: `mu` is held by the caller.
  virtual bool AwaitWithDeadline(absl::Mutex* mu,
                                 const absl::Condition& condition,
                                 absl::Time deadline) const {
    return mu->AwaitWithDeadline(condition, deadline);
  }

  // The process-wide real clock (absl::Now()). Never deleted; thread-safe.
  static Clock* Real();
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_CLOCK_H_
