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
// over up to `threads` cores, so running two calls at once would
// oversubscribe the cores. Compute is serialised; models are served
// round-robin so that one busy model cannot starve another. Each call runs
// on one thread or on the whole team, whichever has been faster for calls
// of its size (server/serving/kernel_threads.h).
//
// Dynamic batching (per model version; BatchingOptions in config.json):
// tasks of the SAME Model object -- one name and version, hence one
// compute_dtype; every request was decoded to fp32 before it was queued --
// are merged into one MultiHeadAttention::ForwardBatch call (projections
// over all tokens, ragged; attention core per sequence). Tasks of different
// models or versions are never merged. Batch formation, when the executor
// is free:
//   1. It takes the next non-empty queue (round-robin) and moves tasks from
//      its head, in FIFO order, while the batch holds fewer than
//      max_batch_requests tasks and the next task's tokens (B*Sq) fit in
//      max_batch_tokens. A task larger than max_batch_tokens runs alone.
//   2. If the executor was IDLE -- it found no task queued when it finished
//      its previous batch (or had just started) and waited for one -- the
//      batch is dispatched at once: no latency is ever added to a request
//      that finds the executor free.
//   3. Otherwise (the tasks queued while the executor computed), if
//      max_queue_delay_us > 0, the batch is below both limits and the queue
//      is now empty, the executor waits for more tasks of this model until
//      the OLDEST task in the batch has waited max_queue_delay_us since it
//      was submitted -- never longer, and not at all if that time already
//      passed. The wait ends early when the batch fills, when another model
//      has work, or at Shutdown(). With max_queue_delay_us == 0 it never
//      waits.
// Batching off is max_batch_requests 1, max_queue_delay_us 0.
//
// Session steps (tasks with `step` set; continuous batching): each model
// version has a second queue, of steps. When the round-robin reaches a
// model that has both kinds queued, it alternates between them. A step
// batch never waits to fill: it takes, in FIFO order, every queued step
// whose remaining tokens fit in what is left of max_batch_tokens (and up to
// max_batch_requests steps), then gives the rest of the token budget to a
// chunk of the oldest step that did not fit (a long prefill). All of them
// run in ONE paged kernel call. A step that is not finished goes back to
// the head of the queue and continues in the next step batch, so a decode
// step of one token never waits behind a long prefill: it rides in the next
// call next to a max_batch_tokens chunk of it. A session has at most one
// step queued (SessionTable). A step is dropped (cancelled / deadline) only
// before its first chunk; once started it runs to its end. Each step is
// finished (SessionStep::Finish) before its `done` runs.
//
// A task is dropped (never computed), both when a batch is formed and again
// just before the kernel call, when
//   * its cancellation flag is set                 -> CANCELLED, or
//   * its deadline has passed: the earlier of the client deadline and
//     submit time + batching.default_timeout_us (when > 0)
//                                                  -> DEADLINE_EXCEEDED.
// Each computed task's timing: queue_us = its own submit -> kernel call
// start; compute_us = the batch's kernel call; batch_requests = tasks in
// that call. A failing kernel call fails every task of its batch with the
// same status.
//
// Thread-safety: Submit() and Shutdown() may be called from any thread
// concurrently. `done` callbacks run on the executor thread, one at a time;
// they must not block for long and must not call Shutdown().
#ifndef ATTNSERVE_SERVER_SERVING_BATCHER_H_
#define ATTNSERVE_SERVER_SERVING_BATCHER_H_

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
#include "server/serving/attention_job.h"
#include "server/serving/batch_observer.h"
#include "server/serving/clock.h"
#include "server/serving/kernel_threads.h"
#include "server/serving/session_step.h"

namespace attn::server {

// Set by the service when the client cancels the call; read by the executor.
using CancellationFlag = std::atomic<bool>;

// One unit of work. Movable.
struct BatchTask {
  // REQUIRES: validated (see AttentionJob invariants); job.model != nullptr.
  AttentionJob job;
  // Set for a session step (see above): job.query holds its new tokens
  // (job.batch 1, job.q_len tokens). Default: null (a stateless request).
  std::unique_ptr<SessionStep> step;
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
    // Most OpenMP threads of one kernel call (the executor's team); each
    // call runs on 1 or `threads` (KernelThreadChooser). Default: 1.
    // REQUIRES: >= 1.
    int threads = 1;
    // Nice increment of the executor thread and its OpenMP team (compute
    // yields the CPU to gRPC's threads under saturation, see
    // thread_priority.h); 0 = same priority. Default: 0. REQUIRES: 0..19.
    int executor_nice = 0;
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
  // Tasks accepted and not yet completed (queued + the running batch).
  int64_t InFlightTasks() const;

  // Implementation details follow. API users need not read.
  //
  // Invariants: queues_ holds one entry per model version submitted to and
  // still alive (empty queues of freed versions are pruned when a new queue
  // is made), in first-submit order (the round-robin order); total_queued_ is
  // the sum of their sizes; next_queue_ < queues_.size() when queues_ is
  // non-empty.
 private:
  struct Entry {
    BatchTask task;
    absl::Time enqueued;
    // Session steps: tokens computed so far, the time of the first chunk
    // and the kernel time spent on them.
    int64_t done_tokens = 0;
    absl::Time started;
    absl::Duration compute;
    AttentionResult result;
  };
  // Holds no reference to its model: a version removed from the repository
  // is freed as soon as its last queued or running task is done. While the
  // queue is non-empty its tasks keep the model alive.
  struct ModelQueue {
    std::weak_ptr<const Model> model;
    std::deque<Entry> entries;
    std::deque<Entry> steps;
    bool steps_last = false;  // the last batch of this model was steps
  };
  // Session steps of one model taken for one paged call.
  struct StepBatch {
    std::shared_ptr<const Model> model;
    std::vector<Entry> entries;  // to compute, each with its chunk
    std::vector<int64_t> chunk;  // tokens of entries[i] in this call
    std::vector<Entry> dropped;  // cancelled or expired before starting
  };
  // Tasks of one model taken from its queue, in FIFO order.
  struct Batch {
    std::shared_ptr<const Model> model;
    std::vector<Entry> entries;  // to compute
    std::vector<Entry> dropped;  // cancelled or expired while queued
    int64_t tokens = 0;          // sum of entries' tokens()
    bool full = false;           // a limit stopped the batch from growing
  };

  void ExecutorLoop();
  // Drops the empty queues of versions that have been freed.
  void PruneQueuesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The next non-empty queue, round-robin. REQUIRES: total_queued_ > 0.
  ModelQueue* NextQueueLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves tasks from the head of `queue` into `batch` (whose model is set)
  // up to the limits
  // (step 1 of batch formation); cancelled/expired ones go to
  // batch->dropped.
  void TakeLocked(ModelQueue* queue, Batch* batch, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Step 3 of batch formation: waits for more tasks of `queue` while the
  // policy allows, taking them into `batch`.
  void WaitToFillLocked(ModelQueue* queue, Batch* batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completes the dropped tasks, drops those that expired meanwhile, runs
  // one ForwardBatch over the rest and calls every task's `done`.
  void Run(Batch batch);
  // Calls `entry`'s done with the drop status (cancelled/expired).
  void Drop(Entry& entry, absl::Status status, absl::Time now);
  // Session steps: forms a step batch from `queue` (see the class comment).
  void TakeStepsLocked(ModelQueue* queue, StepBatch* batch, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs one paged call over `batch`, completes the steps it finished and
  // puts the others back at the head of their queue.
  void RunSteps(StepBatch batch);

  const int threads_;
  const int executor_nice_;
  KernelThreadChooser chooser_;  // used by the executor thread only
  Clock* const clock_;
  BatchObserver* const observer_;  // may be null

  mutable absl::Mutex mu_;
  absl::CondVar work_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<ModelQueue>> queues_ ABSL_GUARDED_BY(mu_);
  std::map<const Model*, ModelQueue*> queue_index_ ABSL_GUARDED_BY(mu_);
  size_t next_queue_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t total_queued_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;  // tasks in the running batch

  absl::Mutex join_mu_;  // serialises Shutdown() callers around join()
  std::thread thread_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_BATCHER_H_
