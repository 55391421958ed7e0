// Window: the measurements of one stability window of attn_loadgen, and
// WindowResult, its plain-data summary.
//
// Every request is counted in the window during which it was *sent* (its
// intended send time in open loop), whenever it completes; a window's
// result is final once it is closed for sends and drained (every request
// sent in it completed). So sent == ok + errors holds for every result.
//
// Thread-safe: sends and completions are recorded from any thread.
#ifndef ATTNSERVE_CLIENT_LOADGEN_WINDOW_H_
#define ATTNSERVE_CLIENT_LOADGEN_WINDOW_H_

#include <array>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/loadgen/histogram.h"
#include "grpcpp/support/status.h"

namespace attn::loadgen {

constexpr int kNumStatusCodes = 17;  // grpc::StatusCode 0..16

// The outcome of one request as the load generator saw it.
struct CallOutcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  int64_t tokens = 0;      // query tokens of the request
  int64_t latency_ns = 0;  // completion - (intended) send time
  // Server timing fields of an OK response.
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int64_t batch_requests = 0;
};

struct WindowResult {
  int64_t sent = 0;
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t late_sends = 0;
  int64_t tokens_ok = 0;
  std::array<int64_t, kNumStatusCodes> status_counts{};
  LatencyHistogram latency_ns;  // OK calls (all calls with errors_in_latency)
  LatencyHistogram error_latency_ns;  // failed calls only (how fast a
                                      // rejection comes back)
  LatencyHistogram send_lag_ns;       // actual - intended send time (open loop)
  int64_t sum_queue_us = 0;
  int64_t sum_compute_us = 0;
  int64_t sum_batch_requests = 0;
  absl::Duration duration;  // of the send phase
  int windows = 0;          // windows merged into this result

  void Merge(const WindowResult& other);
  double RequestsPerSecond() const;  // OK responses per second
  double SentPerSecond() const;
  double TokensPerSecond() const;  // query tokens of OK responses per second
};

class Window {
 public:
  Window(bool errors_in_latency, int64_t max_sends);

  // Counts a send into this window. Returns false (and counts nothing) when
  // the window is closed or already has max_sends sends.
  bool TryAddSend(int64_t send_lag_ns, bool late);
  // Records the completion of a request counted by TryAddSend.
  void Complete(const CallOutcome& outcome);

  // Ends the send phase (idempotent); the duration is measured to now.
  void Close();
  // True once max_sends is reached (never for max_sends == 0).
  bool Full() const;
  // Waits until closed and drained, or until `deadline`. Returns drained.
  bool WaitDrained(absl::Time deadline);
  // A copy of the measurements so far (for the progress line) or final.
  WindowResult Snapshot() const;
  absl::Duration Elapsed() const;

 private:
  const bool errors_in_latency_;
  const int64_t max_sends_;
  const absl::Time start_;
  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  WindowResult result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_WINDOW_H_
