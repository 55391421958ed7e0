// ProgressLine: the live one-line display of attn_loadgen on a terminal
// (step, elapsed, requests/s, p99 so far, errors), redrawn twice a second
// in place with "\r". Disabled (every method a no-op) unless enabled at
// construction, which main() does only when stdout is a TTY.
//
// Thread-safe. The destructor stops the redraw thread and clears the line.
#ifndef ATTNSERVE_CLIENT_LOADGEN_PROGRESS_H_
#define ATTNSERVE_CLIENT_LOADGEN_PROGRESS_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/loadgen/recorder.h"

namespace attn::loadgen {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled);
  ~ProgressLine();

  // Shows `label` (e.g. "step 2/5 concurrency=4 warmup") and the live
  // numbers of `recorder`'s current window. nullptr: no step.
  void Set(const std::string& label, std::shared_ptr<Recorder> recorder);
  // Erases the line (before printing anything else to stdout).
  void Clear();

  bool enabled() const { return enabled_; }

 private:
  void Loop();
  void Draw() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool enabled_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string label_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Recorder> recorder_ ABSL_GUARDED_BY(mu_);
  absl::Time step_start_ ABSL_GUARDED_BY(mu_);
  bool drawn_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_PROGRESS_H_
