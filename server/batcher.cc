#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

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

}  // namespace

Batcher::Batcher(const Options& options)
    : threads_(std::max(1, options.threads)),
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
    queues_.push_back(std::make_unique<ModelQueue>());
    queue = queues_.back().get();
    queue->model = task.job.model;
    queue_index_[key] = queue;
  } else {
    queue = it->second;
  }
  const int64_t limit = key->config.batching.max_queue_size;
  if (static_cast<int64_t>(queue->entries.size()) >= limit) {
    return absl::UnavailableError(
        absl::StrCat(ModelLabel(*key), " is overloaded: its queue is full (",
                     queue->entries.size(), " of max_queue_size ", limit,
                     " requests waiting); retry with backoff"));
  }
  queue->entries.push_back(Entry{std::move(task), now});
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

Batcher::Entry Batcher::PopNextLocked() {
  for (size_t tried = 0; tried < queues_.size(); ++tried) {
    const size_t i = (next_queue_ + tried) % queues_.size();
    std::deque<Entry>& entries = queues_[i]->entries;
    if (entries.empty()) continue;
    Entry e = std::move(entries.front());
    entries.pop_front();
    --total_queued_;
    next_queue_ = (i + 1) % queues_.size();
    return e;
  }
  // Unreachable when total_queued_ > 0.
  return Entry{};
}

void Batcher::ExecutorLoop() {
#ifdef _OPENMP
  // Every oneDNN primitive is created and executed on this thread, so this
  // is the thread count each kernel call uses.
  omp_set_num_threads(threads_);
#endif
  for (;;) {
    Entry entry;
    {
      absl::MutexLock lock(&mu_);
      while (total_queued_ == 0 && !stopping_) work_cv_.Wait(&mu_);
      if (total_queued_ == 0) return;  // stopping and drained
      entry = PopNextLocked();
      running_ = 1;
    }
    Run(std::move(entry));
    absl::MutexLock lock(&mu_);
    running_ = 0;
  }
}

void Batcher::Run(Entry entry) {
  BatchTask& task = entry.task;
  const Model& model = *task.job.model;
  AttentionResult result;
  const absl::Time start = clock_->Now();
  result.timing.queue_us = ToMicros(start - entry.enqueued);
  if (observer_ != nullptr) {
    observer_->TaskDequeued(model, start - entry.enqueued);
  }

  absl::Time deadline = task.deadline;
  const int64_t timeout_us = model.config.batching.default_timeout_us;
  if (timeout_us > 0) {
    deadline =
        std::min(deadline, entry.enqueued + absl::Microseconds(timeout_us));
  }
  if (task.cancelled != nullptr && task.cancelled->load()) {
    task.done(absl::CancelledError(
                  absl::StrCat("request for ", ModelLabel(model),
                               " was cancelled by the client before compute")),
              std::move(result));
    return;
  }
  if (start >= deadline) {
    task.done(absl::DeadlineExceededError(absl::StrCat(
                  "request for ", ModelLabel(model), " waited ",
                  result.timing.queue_us,
                  " us in the queue and passed its deadline before compute (it "
                  "was not computed); raise the deadline or reduce load")),
              std::move(result));
    return;
  }

  const AttentionJob& job = task.job;
  if (model.kernel == nullptr) {
    task.done(absl::InternalError(
                  absl::StrCat(ModelLabel(model), " has no loaded kernel")),
              std::move(result));
    return;
  }
  result.output.resize(job.batch * job.q_len * model.attention.d_model);
  if (job.return_weights) {
    result.weights.resize(job.batch * model.attention.num_heads * job.q_len *
                          job.kv_len);
  }
  kernels::AttentionOutput out;
  out.output = result.output.data();
  out.weights = job.return_weights ? result.weights.data() : nullptr;
  absl::Status status = model.kernel->Forward(job.MakeKernelInput(), out);
  const absl::Duration compute = clock_->Now() - start;
  result.timing.compute_us = ToMicros(compute);
  result.timing.batch_requests = 1;
  if (observer_ != nullptr) {
    observer_->BatchComputed(model, /*requests=*/1, job.tokens(), compute,
                             status);
  }
  if (!status.ok()) {
    result.output.clear();
    result.weights.clear();
  }
  task.done(std::move(status), std::move(result));
}

}  // namespace attn::server
