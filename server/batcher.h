// The executor the service hands validated jobs to: one bounded queue per
// model version and ONE executor thread shared by all models.
//
//   Batcher batcher(Batcher::Options{.threads = 2});
//   BatchTask task;
//   task.job = std::move(validated.job);
//   task.deadline = grpc_deadline;
//   task.cancelled = cancel_flag;
//   task.done = [](absl::Status s, AttentionResult r) { ... };
//   absl::Status s = batcher.Submit(std::move(task));  // never blocks
//   if (!s.ok()) ...;  // UNAVAILABLE: queue full or shutting down
//
// Why one thread: each kernel call is itself parallelised by oneDNN's OpenMP
// over `threads` cores, so running two calls at once would oversubscribe the
// cores (see docs KERNELS.md, "threads are fixed at primitive creation").
// Compute is serialised; models are served round-robin so that one busy
// model cannot starve another.
//
// Before compute, a task is dropped (never computed) when
//   * its cancellation flag is set                 -> CANCELLED, or
//   * its deadline has passed: the earlier of the client deadline and
//     submit time + batching.default_timeout_us (when > 0)
//                                                  -> DEADLINE_EXCEEDED.
//
// In this version each task is one kernel call (timing.batch_requests == 1);
// the per-model BatchingOptions (max_batch_tokens, max_batch_requests,
// max_queue_delay_us) are carried so that merging several tasks into one
// ragged kernel call fits later without changing this interface. Only
// max_queue_size and default_timeout_us are used now.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread
// concurrently. `done` callbacks run on the executor thread, one at a time;
// they must not block for long and must not call Shutdown().
#ifndef ATTNSERVE_SERVER_BATCHER_H_
#define ATTNSERVE_SERVER_BATCHER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/attention_job.h"
#include "server/batch_observer.h"
#include "server/clock.h"

namespace attn::server {

// Set by the service when the client cancels the call; read by the executor.
using CancellationFlag = std::atomic<bool>;

// One unit of work. Movable.
struct BatchTask {
  // REQUIRES: validated (see AttentionJob invariants); job.model != nullptr.
  AttentionJob job;
  // The client's deadline. Default: none.
  absl::Time deadline = absl::InfiniteFuture();
  // May be null (never cancelled).
  std::shared_ptr<const CancellationFlag> cancelled;
  // Called exactly once, on the executor thread, iff Submit() returned OK:
  // with OK and the outputs, or with the error (CANCELLED,
  // DEADLINE_EXCEEDED, or the kernel's error) and empty outputs. `timing`
  // is filled in both cases. REQUIRED.
  std::function<void(absl::Status status, AttentionResult result)> done;
};

class Batcher {
 public:
  struct Options {
    // OpenMP threads for each kernel call, set on the executor thread before
    // any primitive is created. Default: 1. REQUIRES: >= 1.
    int threads = 1;
    // Time source for queue timing and deadlines. Not owned; must outlive
    // the Batcher. Default (nullptr): Clock::Real().
    Clock* clock = nullptr;
    // Told about every queue entry/exit and kernel call (metrics). Not
    // owned; must outlive the Batcher. Default (nullptr): nothing reported.
    BatchObserver* observer = nullptr;
  };

  // Starts the executor thread.
  explicit Batcher(const Options& options);
  // Calls Shutdown().
  ~Batcher();

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Enqueues `task` on its model's queue and returns at once (never waits
  // for compute). Errors (then `done` is never called):
  //   UNAVAILABLE: the model's queue holds batching.max_queue_size tasks
  //                (overloaded; retryable with backoff), or Shutdown() began.
  //   INVALID_ARGUMENT: task.job.model or task.done is missing.
  absl::Status Submit(BatchTask task);

  // Stops accepting (Submit -> UNAVAILABLE "server is shutting down"),
  // finishes every queued task, and joins the executor thread. Idempotent;
  // blocks until done. REQUIRES: not called from a `done` callback.
  void Shutdown();

  // Tasks queued (not yet started) for all models. For tests and metrics.
  int64_t QueuedTasks() const;
  // Tasks accepted and not yet completed (queued + the one running).
  int64_t InFlightTasks() const;

  // Implementation details follow. API users need not read.
  //
  // Invariants: queues_ holds one entry per model version ever submitted, in
  // first-submit order (the round-robin order); total_queued_ is the sum of
  // their sizes; next_queue_ < queues_.size() when queues_ is non-empty.
 private:
  struct Entry {
    BatchTask task;
    absl::Time enqueued;
  };
  struct ModelQueue {
    std::shared_ptr<const Model> model;
    std::deque<Entry> entries;
  };

  void ExecutorLoop();
  // Pops the next task round-robin. REQUIRES: total_queued_ > 0.
  Entry PopNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops or computes one task, then calls its `done`.
  void Run(Entry entry);

  const int threads_;
  Clock* const clock_;
  BatchObserver* const observer_;  // may be null

  mutable absl::Mutex mu_;
  absl::CondVar work_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<ModelQueue>> queues_ ABSL_GUARDED_BY(mu_);
  std::map<const Model*, ModelQueue*> queue_index_ ABSL_GUARDED_BY(mu_);
  size_t next_queue_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t total_queued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;  // 0 or 1

  absl::Mutex join_mu_;  // serialises Shutdown() callers around join()
  std::thread thread_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_BATCHER_H_
