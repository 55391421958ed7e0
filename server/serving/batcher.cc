#include "server/serving/batcher.h"

#include <algorithm>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/thread_warmup.h"
#include "server/serving/kernel_threads.h"
#include "server/serving/paged_forward.h"
#include "server/serving/thread_priority.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace attn::server {
namespace {

int64_t ToMicros(absl::Duration d) {
  return std::max<int64_t>(0, absl::ToInt64Microseconds(d));
}

std::string ModelLabel(const Model& model) {
  return absl::StrCat("model '", model.name, "' version ", model.version);
}

int64_t MaxBatchRequests(const Model& model) {
  return std::max<int64_t>(1, model.config.batching.max_batch_requests);
}

// Why a queued task must not be computed at `now`: CANCELLED,
// DEADLINE_EXCEEDED, or OK (compute it).
absl::Status DropStatus(const BatchTask& task, absl::Time enqueued,
                        absl::Time now) {
  const Model& model = *task.job.model;
  if (task.cancelled != nullptr && task.cancelled->load()) {
    return absl::CancelledError(
        absl::StrCat("request for ", ModelLabel(model),
                     " was cancelled by the client before compute"));
  }
  absl::Time deadline = task.deadline;
  const int64_t timeout_us = model.config.batching.default_timeout_us;
  if (timeout_us > 0) {
    deadline = std::min(deadline, enqueued + absl::Microseconds(timeout_us));
  }
  if (now >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(
        "request for ", ModelLabel(model), " waited ", ToMicros(now - enqueued),
        " us in the queue and passed its deadline before compute (it was not "
        "computed); raise the deadline or reduce load"));
  }
  return absl::OkStatus();
}

}  // namespace

Batcher::Batcher(const Options& options)
    : threads_(std::max(1, options.threads)),
      executor_nice_(options.executor_nice),
      chooser_(threads_),
      clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      observer_(options.observer) {
  thread_ = std::thread([this] { ExecutorLoop(); });
}

Batcher::~Batcher() { Shutdown(); }

absl::Status Batcher::Submit(BatchTask task) {
  if (task.job.model == nullptr) {
    return absl::InvalidArgumentError("Batcher::Submit: task has no model");
  }
  if (!task.done) {
    return absl::InvalidArgumentError(
        "Batcher::Submit: task has no done callback");
  }
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    return absl::UnavailableError(
        "server is shutting down; retry on another replica");
  }
  const Model* key = task.job.model.get();
  auto it = queue_index_.find(key);
  ModelQueue* queue;
  if (it == queue_index_.end()) {
    PruneQueuesLocked();
    queues_.push_back(std::make_unique<ModelQueue>());
    queue = queues_.back().get();
    queue->model = task.job.model;
    queue_index_[key] = queue;
  } else {
    queue = it->second;
    // An empty queue of a freed version whose address a new version reuses.
    if (queue->model.expired()) queue->model = task.job.model;
  }
  const int64_t limit = key->config.batching.max_queue_size;
  std::deque<Entry>& lane =
      task.step != nullptr ? queue->steps : queue->entries;
  if (static_cast<int64_t>(lane.size()) >= limit) {
    return absl::UnavailableError(
        absl::StrCat(ModelLabel(*key), " is overloaded: its queue is full (",
                     lane.size(), " of max_queue_size ", limit,
                     " requests waiting); retry with backoff"));
  }
  Entry entry;
  entry.task = std::move(task);
  entry.enqueued = now;
  lane.push_back(std::move(entry));
  ++total_queued_;
  if (observer_ != nullptr) observer_->TaskQueued(*key);
  work_cv_.Signal();
  return absl::OkStatus();
}

void Batcher::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
  }
  absl::MutexLock join_lock(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

int64_t Batcher::QueuedTasks() const {
  absl::MutexLock lock(&mu_);
  return total_queued_;
}

int64_t Batcher::InFlightTasks() const {
  absl::MutexLock lock(&mu_);
  return total_queued_ + running_;
}

void Batcher::PruneQueuesLocked() {
  size_t kept = 0;
  for (size_t i = 0; i < queues_.size(); ++i) {
    ModelQueue* q = queues_[i].get();
    if (q->entries.empty() && q->steps.empty() && q->model.expired()) {
      for (auto it = queue_index_.begin(); it != queue_index_.end(); ++it) {
        if (it->second == q) {
          queue_index_.erase(it);
          break;
        }
      }
      if (next_queue_ > kept) --next_queue_;
      continue;
    }
    queues_[kept++] = std::move(queues_[i]);
  }
  queues_.resize(kept);
  if (next_queue_ >= queues_.size()) next_queue_ = 0;
}

Batcher::ModelQueue* Batcher::NextQueueLocked() {
  for (size_t tried = 0; tried < queues_.size(); ++tried) {
    const size_t i = (next_queue_ + tried) % queues_.size();
    if (queues_[i]->entries.empty() && queues_[i]->steps.empty()) continue;
    next_queue_ = (i + 1) % queues_.size();
    return queues_[i].get();
  }
  return nullptr;  // unreachable when total_queued_ > 0
}

void Batcher::TakeLocked(ModelQueue* queue, Batch* batch, absl::Time now) {
  const Model& model = *batch->model;
  const int64_t max_requests = MaxBatchRequests(model);
  const int64_t max_tokens = model.config.batching.max_batch_tokens;
  std::deque<Entry>& entries = queue->entries;
  while (!entries.empty()) {
    Entry& head = entries.front();
    if (!DropStatus(head.task, head.enqueued, now).ok()) {
      batch->dropped.push_back(std::move(head));
    } else {
      const int64_t tokens = head.task.job.tokens();
      if (static_cast<int64_t>(batch->entries.size()) >= max_requests ||
          (!batch->entries.empty() && batch->tokens + tokens > max_tokens)) {
        batch->full = true;
        return;
      }
      batch->tokens += tokens;
      batch->entries.push_back(std::move(head));
    }
    entries.pop_front();
    --total_queued_;
  }
  if (static_cast<int64_t>(batch->entries.size()) >= max_requests ||
      batch->tokens >= max_tokens) {
    batch->full = true;
  }
}

void Batcher::WaitToFillLocked(ModelQueue* queue, Batch* batch) {
  const int64_t delay_us = batch->model->config.batching.max_queue_delay_us;
  if (delay_us <= 0) return;
  while (!batch->full && !batch->entries.empty() && !stopping_ &&
         total_queued_ == 0) {
    // Wait for a task of this model, a task of another model (then stop
    // waiting: do not hold the cores while it waits) or Shutdown().
    const absl::Time deadline =
        batch->entries.front().enqueued + absl::Microseconds(delay_us);
    auto more = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return total_queued_ > 0 || stopping_;
    };
    if (!clock_->AwaitWithDeadline(&mu_, absl::Condition(&more), deadline)) {
      return;  // the oldest task has waited max_queue_delay_us
    }
    if (queue->entries.empty()) return;  // another model's work or shutdown
    TakeLocked(queue, batch, clock_->Now());
  }
}

void Batcher::ExecutorLoop() {
  if (executor_nice_ > 0) {
    // Before the OpenMP team exists, so that its threads inherit the value.
    const absl::Status lowered = LowerCurrentThreadPriority(executor_nice_);
    if (!lowered.ok()) {
      std::cerr << absl::StrCat("attn_server: executor priority unchanged: ",
                                lowered.message(), "\n");
    }
  }
#ifdef _OPENMP
  // Start this thread's OpenMP team (threads_ threads) now rather than in
  // the first large kernel call (thread creation is most of a first call's
  // extra cost once the model has warmed up, see server/serving/warmup.h).
  // Each call then sets its own thread count (Run, KernelThreadsFor).
  omp_set_num_threads(threads_);
#pragma omp parallel
  {}
#endif
  // And this thread's first-use costs in oneDNN: a model warmed up on its
  // load thread still paid 3-4x on its first call here without this.
  const absl::Status warmed = kernels::WarmUpCallingThread();
  if (!warmed.ok()) {
    std::cerr << absl::StrCat("attn_server: executor thread warm-up failed: ",
                              warmed.message(), "\n");
  }
  bool after_batch = false;  // the previous iteration ran a batch
  for (;;) {
    Batch batch;
    StepBatch steps;
    {
      absl::MutexLock lock(&mu_);
      // Idle: nothing queued when the executor came back for work (or it
      // just started); then the first task(s) to arrive are dispatched at
      // once. Not idle: tasks queued while the previous batch ran.
      const bool idle = !after_batch || total_queued_ == 0;
      while (total_queued_ == 0 && !stopping_) work_cv_.Wait(&mu_);
      if (total_queued_ == 0) return;  // stopping and drained
      ModelQueue* queue = NextQueueLocked();
      // A model with both kinds of work alternates between them.
      const bool run_steps = !queue->steps.empty() &&
                             (queue->entries.empty() || !queue->steps_last);
      queue->steps_last = run_steps;
      if (run_steps) {
        steps.model = queue->steps.front().task.job.model;
        TakeStepsLocked(queue, &steps, clock_->Now());
        running_ =
            static_cast<int64_t>(steps.entries.size() + steps.dropped.size());
      } else {
        batch.model = queue->entries.front().task.job.model;
        TakeLocked(queue, &batch, clock_->Now());
        // An idle executor dispatches at once; one that was busy while
        // these tasks queued may wait (bounded) for the batch to fill.
        if (!idle) WaitToFillLocked(queue, &batch);
        running_ =
            static_cast<int64_t>(batch.entries.size() + batch.dropped.size());
      }
    }
    if (steps.model != nullptr) {
      RunSteps(std::move(steps));
      after_batch = true;
      absl::MutexLock lock(&mu_);
      running_ = 0;
      continue;
    }
    Run(std::move(batch));
    after_batch = true;
    absl::MutexLock lock(&mu_);
    running_ = 0;
  }
}

void Batcher::Drop(Entry& entry, absl::Status status, absl::Time now) {
  AttentionResult result;
  result.timing.queue_us = ToMicros(now - entry.enqueued);
  entry.task.done(std::move(status), std::move(result));
}

void Batcher::Run(Batch batch) {
  const Model& model = *batch.model;
  absl::Time start = clock_->Now();
  for (Entry& entry : batch.dropped) {
    if (observer_ != nullptr) {
      observer_->TaskDequeued(model, start - entry.enqueued);
    }
    Drop(entry, DropStatus(entry.task, entry.enqueued, start), start);
  }
  if (!batch.dropped.empty()) start = clock_->Now();
  // Tasks may have expired or been cancelled while the batch formed.
  std::vector<Entry> entries;
  entries.reserve(batch.entries.size());
  int64_t tokens = 0;
  for (Entry& entry : batch.entries) {
    if (observer_ != nullptr) {
      observer_->TaskDequeued(model, start - entry.enqueued);
    }
    absl::Status drop = DropStatus(entry.task, entry.enqueued, start);
    if (!drop.ok()) {
      Drop(entry, std::move(drop), start);
      continue;
    }
    tokens += entry.task.job.tokens();
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) return;

  const int64_t d_model = model.attention.d_model;
  int64_t flops = 0;
  for (const Entry& entry : entries) {
    const AttentionJob& job = entry.task.job;
    flops += AttentionFlops(model.attention, job.batch, job.q_len, job.kv_len,
                            job.causal);
  }
  // One thread or the team, whichever has been faster for calls of this
  // size (kernel_threads.h). The kernels read the count per call.
  const int threads = chooser_.Choose(flops);
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  std::vector<AttentionResult> results(entries.size());
  std::vector<kernels::AttentionInput> inputs;
  std::vector<kernels::AttentionOutput> outputs;
  inputs.reserve(entries.size());
  outputs.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const AttentionJob& job = entries[i].task.job;
    AttentionResult& result = results[i];
    result.output.resize(job.batch * job.q_len * d_model);
    if (job.return_weights) {
      result.weights.resize(job.batch * model.attention.num_heads * job.q_len *
                            job.kv_len);
    }
    inputs.push_back(job.MakeKernelInput());
    kernels::AttentionOutput out;
    out.output = result.output.data();
    out.weights = job.return_weights ? result.weights.data() : nullptr;
    outputs.push_back(out);
  }
  absl::Status status = model.kernel == nullptr
                            ? absl::InternalError(absl::StrCat(
                                  ModelLabel(model), " has no loaded kernel"))
                            : model.kernel->ForwardBatch(inputs, outputs);
  const absl::Duration compute = clock_->Now() - start;
  if (status.ok()) chooser_.Record(flops, threads, compute);
  if (observer_ != nullptr) {
    observer_->BatchComputed(model, static_cast<int64_t>(entries.size()),
                             tokens, compute, status);
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    AttentionResult& result = results[i];
    result.timing.queue_us = ToMicros(start - entries[i].enqueued);
    result.timing.compute_us = ToMicros(compute);
    result.timing.batch_requests = static_cast<int32_t>(entries.size());
    if (!status.ok()) {
      result.output.clear();
      result.weights.clear();
    }
    entries[i].task.done(status, std::move(result));
  }
}

void Batcher::TakeStepsLocked(ModelQueue* queue, StepBatch* batch,
                              absl::Time now) {
  const Model& model = *batch->model;
  const int64_t max_requests = MaxBatchRequests(model);
  int64_t budget = std::max<int64_t>(1, model.config.batching.max_batch_tokens);
  std::deque<Entry>& steps = queue->steps;
  // Pass 1 (FIFO): steps that finish in this call.
  std::deque<Entry> rest;
  while (!steps.empty()) {
    Entry entry = std::move(steps.front());
    steps.pop_front();
    if (entry.done_tokens == 0 &&
        !DropStatus(entry.task, entry.enqueued, now).ok()) {
      --total_queued_;
      batch->dropped.push_back(std::move(entry));
      continue;
    }
    const int64_t remaining = entry.task.job.q_len - entry.done_tokens;
    if (static_cast<int64_t>(batch->entries.size()) < max_requests &&
        remaining <= budget) {
      budget -= remaining;
      --total_queued_;
      batch->chunk.push_back(remaining);
      batch->entries.push_back(std::move(entry));
    } else {
      rest.push_back(std::move(entry));
    }
  }
  // Pass 2: a chunk of the oldest step that did not fit.
  if (!rest.empty() && budget > 0 &&
      static_cast<int64_t>(batch->entries.size()) < max_requests) {
    --total_queued_;
    batch->chunk.push_back(budget);
    batch->entries.push_back(std::move(rest.front()));
    rest.pop_front();
  }
  steps = std::move(rest);
}

void Batcher::RunSteps(StepBatch batch) {
  const Model& model = *batch.model;
  absl::Time start = clock_->Now();
  for (Entry& entry : batch.dropped) {
    if (observer_ != nullptr) {
      observer_->TaskDequeued(model, start - entry.enqueued);
    }
    const absl::Status status = DropStatus(entry.task, entry.enqueued, start);
    entry.task.step->Finish(false);
    Drop(entry, status, start);
  }
  if (batch.entries.empty()) return;
  const int64_t d_model = model.attention.d_model;
  int64_t tokens = 0;
  for (int64_t n : batch.chunk) tokens += n;
  std::vector<float> x(static_cast<size_t>(tokens * d_model));
  std::vector<float> y(x.size());
  std::vector<PagedChunk> chunks;
  chunks.reserve(batch.entries.size());
  int64_t offset = 0;
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    Entry& entry = batch.entries[i];
    const SessionStep& step = *entry.task.step;
    if (entry.done_tokens == 0) {
      entry.started = start;
      if (observer_ != nullptr) {
        observer_->TaskDequeued(model, start - entry.enqueued);
      }
    }
    const int64_t n = batch.chunk[i];
    std::copy_n(entry.task.job.query.data() + entry.done_tokens * d_model,
                n * d_model, x.data() + offset * d_model);
    offset += n;
    PagedChunk chunk;
    chunk.start_position = step.start_position() + entry.done_tokens;
    chunk.new_tokens = n;
    chunk.block_table = step.block_table().data();
    chunk.num_blocks =
        (chunk.start_position + n + step.pool().block_tokens - 1) /
        step.pool().block_tokens;
    chunks.push_back(chunk);
  }
  const absl::Status status =
      RunPagedForward(model, x.data(), chunks,
                      batch.entries.front().task.step->pool(), y.data());
  const absl::Duration compute = clock_->Now() - start;
  if (observer_ != nullptr) {
    observer_->BatchComputed(model, static_cast<int64_t>(batch.entries.size()),
                             tokens, compute, status);
  }
  std::vector<Entry> unfinished;
  offset = 0;
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    Entry& entry = batch.entries[i];
    const int64_t n = batch.chunk[i];
    entry.compute += compute;
    AttentionResult& result = entry.result;
    if (status.ok()) {
      result.output.resize(static_cast<size_t>(entry.task.job.q_len * d_model));
      std::copy_n(y.data() + offset * d_model, n * d_model,
                  result.output.data() + entry.done_tokens * d_model);
      entry.done_tokens += n;
    }
    offset += n;
    if (status.ok() && entry.done_tokens < entry.task.job.q_len) {
      unfinished.push_back(std::move(entry));
      continue;
    }
    result.timing.queue_us = ToMicros(entry.started - entry.enqueued);
    result.timing.compute_us = ToMicros(entry.compute);
    result.timing.batch_requests = static_cast<int32_t>(batch.entries.size());
    result.session_length = entry.task.step->Finish(status.ok());
    if (!status.ok()) result.output.clear();
    entry.task.done(status, std::move(result));
  }
  if (unfinished.empty()) return;
  absl::MutexLock lock(&mu_);
  std::deque<Entry>& steps = queue_index_[batch.model.get()]->steps;
  for (auto it = unfinished.rbegin(); it != unfinished.rend(); ++it) {
    steps.push_front(std::move(*it));
    ++total_queued_;
  }
}

}  // namespace attn::server
