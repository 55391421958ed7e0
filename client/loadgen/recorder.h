// Recorder: hands every send of a load step to the current measurement
// Window and moves from one window to the next.
//
// The first window (opened by the constructor) is the warm-up: its results
// are discarded by the caller. Windows are contiguous: the load never pauses
// between them. In --requests mode a window that reaches its send limit is
// closed by the send that fills it and the next one opens at once.
//
// Thread-safe.
#ifndef ATTNSERVE_CLIENT_LOADGEN_RECORDER_H_
#define ATTNSERVE_CLIENT_LOADGEN_RECORDER_H_

#include <cstdint>
#include <deque>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/loadgen/window.h"

namespace attn::loadgen {

class Recorder {
 public:
  explicit Recorder(bool errors_in_latency);

  // Counts one send in the current window and returns that window, which
  // must receive the request's Complete(). nullptr after Stop(): do not
  // send.
  std::shared_ptr<Window> AddSend(int64_t send_lag_ns, bool late);

  // Closes the current window and opens the next one, which ends after
  // `max_sends` sends (0: when the caller rotates again). Returns the
  // closed window.
  std::shared_ptr<Window> Rotate(int64_t max_sends);

  // Waits for a window that filled up (max_sends reached) and returns it,
  // or nullptr at `deadline`.
  std::shared_ptr<Window> WaitFull(absl::Time deadline);

  // The window receiving sends now (for the progress line).
  std::shared_ptr<Window> Current() const;

  // Closes the current window (returned) and refuses further sends.
  std::shared_ptr<Window> Stop();

 private:
  const bool errors_in_latency_;
  mutable absl::Mutex mu_;
  std::shared_ptr<Window> current_ ABSL_GUARDED_BY(mu_);
  int64_t max_sends_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Window>> full_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_RECORDER_H_
