#include "server/serving/batcher.h"

#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/model_repository.h"
#include "tests/service/fake_clock.h"
#include "tests/service/fake_model.h"
#include "tests/service/test_tensors.h"

namespace attn::server {
namespace {

using ::testing::ElementsAre;
using testing::FakeClock;
using ::testing::HasSubstr;
using testing::KernelLog;
using testing::MakeFakeModel;

// Collects `done` callbacks. Thread-safe.
class Completions {
 public:
  struct Done {
    std::string id;
    absl::Status status;
    AttentionResult result;
  };

  std::function<void(absl::Status, AttentionResult)> Callback(
      const std::string& id) {
    return [this, id](absl::Status s, AttentionResult r) {
      absl::MutexLock lock(&mu_);
      done_.push_back(Done{id, std::move(s), std::move(r)});
    };
  }

  // Blocks until `n` callbacks ran; returns them in completion order.
  std::vector<Done> Await(size_t n) {
    absl::MutexLock lock(&mu_);
    awaited_ = n;
    mu_.Await(absl::Condition(this, &Completions::Enough));
    return done_;
  }

 private:
  bool Enough() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done_.size() >= awaited_;
  }
  absl::Mutex mu_;
  std::vector<Done> done_ ABSL_GUARDED_BY(mu_);
  size_t awaited_ ABSL_GUARDED_BY(mu_) = 0;
};

class BatcherTest : public ::testing::Test {
 protected:
  BatchTask Task(const std::shared_ptr<const Model>& model,
                 const std::string& id, int64_t seq = 2) {
    BatchTask task;
    task.job.model = model;
    task.job.batch = 1;
    task.job.q_len = seq;
    task.job.kv_len = seq;
    task.job.query = testing::RandomValues(seq * 8, 7);
    task.done = completions_.Callback(id);
    return task;
  }

  // Occupies the executor: submits a task for `model` and waits until its
  // kernel call is held at the closed gate.
  void BlockExecutor(Batcher& batcher,
                     const std::shared_ptr<const Model>& model) {
    log_.Close();
    ASSERT_TRUE(batcher.Submit(Task(model, "blocker")).ok());
    log_.AwaitEntered(1);
  }

  Batcher::Options Options() {
    Batcher::Options options;
    options.threads = 1;
    options.clock = &clock_;
    return options;
  }

  static BatchingOptions BatchingOff() {
    BatchingOptions batching;
    batching.max_batch_requests = 1;
    batching.max_queue_delay_us = 0;
    return batching;
  }

  // Ids of `done` in completion order.
  static std::vector<std::string> Ids(
      const std::vector<Completions::Done>& done) {
    std::vector<std::string> ids;
    for (const auto& d : done) ids.push_back(d.id);
    return ids;
  }

  FakeClock clock_;
  KernelLog log_;
  Completions completions_;
};

TEST_F(BatcherTest, RunsJobAndReportsTiming) {
  auto model = MakeFakeModel("a", &log_);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  BatchTask task = Task(model, "t", 3);
  task.job.return_weights = true;
  const std::vector<float> query = task.job.query;
  ASSERT_TRUE(batcher.Submit(std::move(task)).ok());
  EXPECT_EQ(batcher.QueuedTasks(), 1);
  EXPECT_EQ(batcher.InFlightTasks(), 2);
  clock_.Advance(absl::Microseconds(7000));
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(2);
  ASSERT_EQ(done[1].id, "t");
  ASSERT_TRUE(done[1].status.ok()) << done[1].status;
  EXPECT_EQ(done[1].result.output, query);  // fake kernel copies the query
  EXPECT_EQ(done[1].result.weights.size(), 2u * 3 * 3);
  EXPECT_EQ(done[1].result.timing.queue_us, 7000);
  EXPECT_EQ(done[1].result.timing.batch_requests, 1);
  EXPECT_EQ(done[0].result.timing.queue_us, 0);
}

TEST_F(BatcherTest, FullQueueIsUnavailableAtOnce) {
  BatchingOptions batching;
  batching.max_queue_size = 2;
  batching.max_queue_delay_us = 0;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);  // running, not queued
  ASSERT_TRUE(batcher.Submit(Task(model, "q1")).ok());
  ASSERT_TRUE(batcher.Submit(Task(model, "q2")).ok());
  absl::Status full = batcher.Submit(Task(model, "q3"));
  EXPECT_EQ(full.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(full.message(), HasSubstr("overloaded"));
  EXPECT_THAT(full.message(), HasSubstr("max_queue_size 2"));
  EXPECT_THAT(full.message(), HasSubstr("retry"));
  // Another model has its own queue.
  auto other = MakeFakeModel("b", &log_, batching);
  EXPECT_TRUE(batcher.Submit(Task(other, "b1")).ok());
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(4);
  EXPECT_EQ(done.size(), 4u);  // q3's callback is never run
  for (const auto& d : done) {
    EXPECT_NE(d.id, "q3");
    EXPECT_TRUE(d.status.ok()) << d.id << ": " << d.status;
  }
  batcher.Shutdown();
  // blocker, then q1+q2 in one call, then b1.
  EXPECT_THAT(log_.calls(), ElementsAre("a", "a", "b"));
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u, 1u));
}

TEST_F(BatcherTest, ClientDeadlinePassedInQueueIsNeverComputed) {
  auto model = MakeFakeModel("a", &log_);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  BatchTask late = Task(model, "late");
  late.deadline = clock_.Now() + absl::Milliseconds(1);
  ASSERT_TRUE(batcher.Submit(std::move(late)).ok());
  BatchTask in_time = Task(model, "in_time");
  in_time.deadline = clock_.Now() + absl::Milliseconds(10);
  ASSERT_TRUE(batcher.Submit(std::move(in_time)).ok());
  clock_.Advance(absl::Milliseconds(2));
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_EQ(done[1].id, "late");
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(done[1].status.message(), HasSubstr("not computed"));
  EXPECT_TRUE(done[1].result.output.empty());
  EXPECT_EQ(done[1].result.timing.queue_us, 2000);
  EXPECT_EQ(done[2].id, "in_time");
  EXPECT_TRUE(done[2].status.ok()) << done[2].status;
  batcher.Shutdown();
  EXPECT_EQ(log_.calls().size(), 2u);  // blocker and in_time only
}

TEST_F(BatcherTest, DefaultTimeoutExpiresQueuedTasks) {
  BatchingOptions batching;
  batching.default_timeout_us = 5000;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  ASSERT_TRUE(batcher.Submit(Task(model, "old")).ok());
  clock_.Advance(absl::Milliseconds(3));
  ASSERT_TRUE(batcher.Submit(Task(model, "young")).ok());
  // Client deadline later than the default timeout: the earlier one wins.
  BatchTask generous = Task(model, "generous");
  generous.deadline = clock_.Now() + absl::Seconds(10);
  ASSERT_TRUE(batcher.Submit(std::move(generous)).ok());
  clock_.Advance(absl::Milliseconds(3));  // old: 6 ms, young: 3 ms
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(4);
  EXPECT_EQ(done[1].id, "old");
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(done[2].id, "young");
  EXPECT_TRUE(done[2].status.ok()) << done[2].status;
  EXPECT_EQ(done[3].id, "generous");
  EXPECT_TRUE(done[3].status.ok()) << done[3].status;
  batcher.Shutdown();
  // blocker, then young+generous in one call; old was never computed.
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u));
}

TEST_F(BatcherTest, CancelledTaskIsDroppedBeforeCompute) {
  auto model = MakeFakeModel("a", &log_);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  auto flag = std::make_shared<CancellationFlag>(false);
  BatchTask task = Task(model, "cancelled");
  task.cancelled = flag;
  ASSERT_TRUE(batcher.Submit(std::move(task)).ok());
  flag->store(true);  // as the reactor's OnCancel does
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(2);
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(done[1].status.message(), HasSubstr("cancelled by the client"));
  batcher.Shutdown();
  EXPECT_EQ(log_.calls().size(), 1u);
}

TEST_F(BatcherTest, RoundRobinAcrossModelsWithBatchingOff) {
  auto x = MakeFakeModel("x", &log_, BatchingOff());
  auto y = MakeFakeModel("y", &log_, BatchingOff());
  Batcher batcher(Options());
  BlockExecutor(batcher, x);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(batcher.Submit(Task(x, "x")).ok());
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(batcher.Submit(Task(y, "y")).ok());
  }
  log_.Open();
  completions_.Await(7);
  // Queued x tasks were all submitted first, yet y is served in turn.
  EXPECT_THAT(log_.calls(), ElementsAre("x", "x", "y", "x", "y", "x", "y"));
}

TEST_F(BatcherTest, ShutdownRefusesNewTasksAndDrainsQueued) {
  auto model = MakeFakeModel("a", &log_);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  ASSERT_TRUE(batcher.Submit(Task(model, "q1")).ok());
  ASSERT_TRUE(batcher.Submit(Task(model, "q2")).ok());
  std::thread stopper([&] { batcher.Shutdown(); });
  // Shutdown() blocks on the held kernel; wait until it refuses new tasks.
  // Tasks accepted before that are still drained and counted.
  int accepted = 0;
  absl::Status s;
  for (;;) {
    s = batcher.Submit(Task(model, "late"));
    if (s.ok()) {
      ++accepted;
    } else if (absl::StrContains(s.message(), "shutting down")) {
      break;
    } else {
      std::this_thread::yield();  // queue full: Shutdown() not begun yet
    }
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("server is shutting down"));
  log_.Open();
  stopper.join();
  std::vector<Completions::Done> done = completions_.Await(3 + accepted);
  EXPECT_EQ(done.size(), static_cast<size_t>(3 + accepted));
  for (const auto& d : done) EXPECT_TRUE(d.status.ok()) << d.status;
  size_t computed = 0;
  for (size_t items : log_.call_items()) computed += items;
  EXPECT_EQ(computed, static_cast<size_t>(3 + accepted));
  EXPECT_EQ(batcher.InFlightTasks(), 0);
  batcher.Shutdown();  // idempotent
}

TEST_F(BatcherTest, SubmitRejectsIncompleteTasks) {
  Batcher batcher(Options());
  BatchTask no_model;
  no_model.done = completions_.Callback("x");
  EXPECT_EQ(batcher.Submit(std::move(no_model)).code(),
            absl::StatusCode::kInvalidArgument);
  BatchTask no_done = Task(MakeFakeModel("a", nullptr), "x");
  no_done.done = nullptr;
  EXPECT_EQ(batcher.Submit(std::move(no_done)).code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Batch formation (dynamic batching) ------------------------------------

TEST_F(BatcherTest, IdleExecutorDispatchesAtOnceEvenWithLongDelay) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 10'000'000;  // would be 10 s if it waited
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  ASSERT_TRUE(batcher.Submit(Task(model, "alone")).ok());
  // The clock never moves: completion proves there was no wait.
  std::vector<Completions::Done> done = completions_.Await(1);
  ASSERT_TRUE(done[0].status.ok()) << done[0].status;
  EXPECT_EQ(done[0].result.timing.queue_us, 0);
  EXPECT_EQ(done[0].result.timing.batch_requests, 1);
  EXPECT_EQ(clock_.completed_waits(), 0);
}

TEST_F(BatcherTest, FormsBatchesByRequestCount) {
  BatchingOptions batching;
  batching.max_batch_requests = 3;
  batching.max_queue_delay_us = 0;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  std::vector<std::vector<float>> queries;
  for (int i = 0; i < 7; ++i) {
    BatchTask task = Task(model, "t" + std::to_string(i), 1 + i % 3);
    task.job.query = testing::RandomValues(task.job.tokens() * 8, 100 + i);
    queries.push_back(task.job.query);
    ASSERT_TRUE(batcher.Submit(std::move(task)).ok());
  }
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(8);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 3u, 3u, 1u));
  EXPECT_THAT(Ids(done),
              ElementsAre("blocker", "t0", "t1", "t2", "t3", "t4", "t5", "t6"));
  const int expected_batch[] = {3, 3, 3, 3, 3, 3, 1};
  for (int i = 0; i < 7; ++i) {
    const Completions::Done& d = done[i + 1];
    ASSERT_TRUE(d.status.ok()) << d.id << ": " << d.status;
    EXPECT_EQ(d.result.timing.batch_requests, expected_batch[i]) << d.id;
    EXPECT_EQ(d.result.output, queries[i]) << d.id;  // scattered correctly
  }
  EXPECT_EQ(clock_.completed_waits(), 0);  // delay 0: never waits
}

TEST_F(BatcherTest, FormsBatchesByTokensAndRunsAnOversizedTaskAlone) {
  BatchingOptions batching;
  batching.max_batch_tokens = 10;
  batching.max_queue_delay_us = 0;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  // Tokens: 4, 4 | 4 | 12 (more than max_batch_tokens: alone) | 2, 3, 5
  const int64_t seqs[] = {4, 4, 4, 12, 2, 3, 5};
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(
        batcher.Submit(Task(model, "t" + std::to_string(i), seqs[i])).ok());
  }
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(8);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u, 1u, 1u, 3u));
  for (const auto& d : done) EXPECT_TRUE(d.status.ok()) << d.status;
  EXPECT_EQ(done[4].id, "t3");
  EXPECT_EQ(done[4].result.timing.batch_requests, 1);
  EXPECT_EQ(done[7].result.timing.batch_requests, 3);
}

TEST_F(BatcherTest, BusyExecutorWaitsUntilOldestPlusDelay) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 1000;
  batching.max_batch_requests = 4;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  const absl::Time t0 = clock_.Now();
  ASSERT_TRUE(batcher.Submit(Task(model, "oldest")).ok());
  clock_.Advance(absl::Microseconds(300));
  log_.Open();  // the executor frees up with one task queued: it waits
  clock_.AwaitWaiters(1);
  EXPECT_EQ(clock_.last_wait_deadline(), t0 + absl::Microseconds(1000));
  ASSERT_TRUE(batcher.Submit(Task(model, "joins")).ok());
  clock_.Advance(absl::Microseconds(700));  // exactly oldest + delay
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_THAT(Ids(done), ElementsAre("blocker", "oldest", "joins"));
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u));
  ASSERT_TRUE(done[1].status.ok()) << done[1].status;
  EXPECT_EQ(done[1].result.timing.queue_us, 1000);  // never longer
  EXPECT_EQ(done[2].result.timing.queue_us, 700);
  EXPECT_EQ(done[2].result.timing.batch_requests, 2);
}

TEST_F(BatcherTest, WaitEndsAsSoonAsTheBatchIsFull) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 10'000'000;
  batching.max_batch_requests = 2;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  ASSERT_TRUE(batcher.Submit(Task(model, "first")).ok());
  log_.Open();
  clock_.AwaitWaiters(1);
  ASSERT_TRUE(batcher.Submit(Task(model, "second")).ok());
  // No Advance(): the batch is dispatched because it is full.
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u));
  EXPECT_EQ(done[1].result.timing.queue_us, 0);
  EXPECT_EQ(done[2].result.timing.batch_requests, 2);
}

TEST_F(BatcherTest, WaitEndsWhenAnotherModelHasWork) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 10'000'000;
  auto a = MakeFakeModel("a", &log_, batching);
  batching.max_queue_delay_us = 0;  // b1 itself then leaves at once
  auto b = MakeFakeModel("b", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, a);
  ASSERT_TRUE(batcher.Submit(Task(a, "a1")).ok());
  log_.Open();
  clock_.AwaitWaiters(1);
  ASSERT_TRUE(batcher.Submit(Task(b, "b1")).ok());
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_THAT(Ids(done), ElementsAre("blocker", "a1", "b1"));
  EXPECT_THAT(log_.calls(), ElementsAre("a", "a", "b"));
}

TEST_F(BatcherTest, ShutdownEndsAWaitAndComputesTheBatch) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 10'000'000;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  ASSERT_TRUE(batcher.Submit(Task(model, "waiting")).ok());
  log_.Open();
  clock_.AwaitWaiters(1);
  batcher.Shutdown();  // no Advance(): Shutdown() itself ends the wait
  std::vector<Completions::Done> done = completions_.Await(2);
  EXPECT_EQ(done[1].id, "waiting");
  EXPECT_TRUE(done[1].status.ok()) << done[1].status;
  EXPECT_EQ(batcher.InFlightTasks(), 0);
}

TEST_F(BatcherTest, ExpiryInsideAFormingBatchIsNeverComputed) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 1000;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  BatchTask short_lived = Task(model, "short_lived");
  short_lived.deadline = clock_.Now() + absl::Microseconds(800);
  ASSERT_TRUE(batcher.Submit(std::move(short_lived)).ok());
  log_.Open();
  clock_.AwaitWaiters(1);  // short_lived is in the forming batch
  ASSERT_TRUE(batcher.Submit(Task(model, "patient")).ok());
  clock_.Advance(absl::Microseconds(1000));
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_EQ(done[1].id, "short_lived");
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(done[1].status.message(), HasSubstr("not computed"));
  EXPECT_TRUE(done[1].result.output.empty());
  EXPECT_EQ(done[2].id, "patient");
  ASSERT_TRUE(done[2].status.ok()) << done[2].status;
  EXPECT_EQ(done[2].result.timing.batch_requests, 1);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 1u));
}

TEST_F(BatcherTest, CancellationInsideAFormingBatchIsNeverComputed) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 1000;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  auto flag = std::make_shared<CancellationFlag>(false);
  BatchTask doomed = Task(model, "doomed");
  doomed.cancelled = flag;
  ASSERT_TRUE(batcher.Submit(std::move(doomed)).ok());
  log_.Open();
  clock_.AwaitWaiters(1);
  flag->store(true);
  ASSERT_TRUE(batcher.Submit(Task(model, "kept")).ok());
  clock_.Advance(absl::Microseconds(1000));
  std::vector<Completions::Done> done = completions_.Await(3);
  EXPECT_EQ(done[1].id, "doomed");
  EXPECT_EQ(done[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(done[2].id, "kept");
  ASSERT_TRUE(done[2].status.ok()) << done[2].status;
  EXPECT_EQ(done[2].result.timing.batch_requests, 1);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 1u));
}

TEST_F(BatcherTest, ModelsAndVersionsAreNeverMerged) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 0;
  auto a1 = MakeFakeModel("a", &log_, batching);
  auto a2 = MakeFakeModel("a", &log_, batching, 8, 2, 64, /*version=*/2);
  auto b = MakeFakeModel("b", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, b);
  const std::shared_ptr<const Model>* order[] = {&a1, &a2, &b, &a1,
                                                 &a2, &b,  &a1};
  for (const auto* m : order) {
    const std::string tag = (*m)->name + ((*m)->version == 1 ? "" : "@v2");
    ASSERT_TRUE(batcher.Submit(Task(*m, tag)).ok());
  }
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(8);
  // One call per model version, each holding only its own tasks.
  EXPECT_THAT(log_.calls(), ElementsAre("b", "b", "a", "a@v2"));
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 2u, 3u, 2u));
  for (const auto& d : done) {
    ASSERT_TRUE(d.status.ok()) << d.id << ": " << d.status;
  }
}

TEST_F(BatcherTest, FailingKernelCallFailsEveryTaskOfTheBatch) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 0;
  auto model = MakeFakeModel("a", &log_, batching);
  Batcher batcher(Options());
  BlockExecutor(batcher, model);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(batcher.Submit(Task(model, "t")).ok());
  }
  log_.SetStatus(absl::InternalError("injected kernel failure"));
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(4);
  EXPECT_THAT(log_.call_items(), ElementsAre(1u, 3u));
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(done[i].status.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(done[i].status.message(), HasSubstr("injected"));
    EXPECT_TRUE(done[i].result.output.empty());
    EXPECT_EQ(done[i].result.timing.batch_requests, 3);
  }
}

// Records observer calls. Thread-safe.
class RecordingObserver final : public BatchObserver {
 public:
  void TaskQueued(const Model&) override {
    absl::MutexLock lock(&mu_);
    ++queued_;
  }
  void TaskDequeued(const Model&, absl::Duration) override {
    absl::MutexLock lock(&mu_);
    ++dequeued_;
  }
  void BatchComputed(const Model&, int64_t requests, int64_t tokens,
                     absl::Duration, const absl::Status&) override {
    absl::MutexLock lock(&mu_);
    batches_.push_back({requests, tokens});
  }
  int queued() const {
    absl::MutexLock lock(&mu_);
    return queued_;
  }
  int dequeued() const {
    absl::MutexLock lock(&mu_);
    return dequeued_;
  }
  std::vector<std::pair<int64_t, int64_t>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  mutable absl::Mutex mu_;
  int queued_ ABSL_GUARDED_BY(mu_) = 0;
  int dequeued_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<int64_t, int64_t>> batches_ ABSL_GUARDED_BY(mu_);
};

TEST_F(BatcherTest, ObserverSeesEveryTaskAndOneCallPerBatch) {
  BatchingOptions batching;
  batching.max_queue_delay_us = 0;
  auto model = MakeFakeModel("a", &log_, batching);
  RecordingObserver observer;
  Batcher::Options options = Options();
  options.observer = &observer;
  Batcher batcher(options);
  BlockExecutor(batcher, model);  // 2 tokens
  ASSERT_TRUE(batcher.Submit(Task(model, "x", 3)).ok());
  ASSERT_TRUE(batcher.Submit(Task(model, "y", 5)).ok());
  auto flag = std::make_shared<CancellationFlag>(true);
  BatchTask cancelled = Task(model, "z", 7);
  cancelled.cancelled = flag;
  ASSERT_TRUE(batcher.Submit(std::move(cancelled)).ok());
  log_.Open();
  completions_.Await(4);
  batcher.Shutdown();
  EXPECT_EQ(observer.queued(), 4);
  EXPECT_EQ(observer.dequeued(), 4);
  EXPECT_THAT(observer.batches(),
              ElementsAre(std::pair<int64_t, int64_t>{1, 2},
                          std::pair<int64_t, int64_t>{2, 8}));
}

// Each kernel call runs on one thread or on the whole team, chosen per
// size of call (KernelThreadChooser): a small call tries both before it
// settles, a call of a GFLOP and more always runs on the team.
TEST_F(BatcherTest, EachCallRunsAloneOrOnTheWholeTeam) {
  auto model = MakeFakeModel("a", &log_, BatchingOff(), /*d_model=*/1024,
                             /*num_heads=*/8, /*max_sequence_length=*/512);
  Batcher::Options options = Options();
  options.threads = 4;
  Batcher batcher(options);
  const int64_t seqs[] = {2, 2, 512, 2};
  for (size_t i = 0; i < std::size(seqs); ++i) {
    BatchTask task = Task(model, "t" + std::to_string(i), seqs[i]);
    task.job.query = testing::RandomValues(seqs[i] * 1024, 3);
    ASSERT_TRUE(batcher.Submit(std::move(task)).ok());
    completions_.Await(i + 1);
  }
  EXPECT_THAT(log_.call_threads(), ElementsAre(1, 4, 4, 1));
}

// Ragged batches through the REAL kernel (demo model, oneDNN): every output
// of a merged batch equals the same request computed alone.
TEST_F(BatcherTest, MergedBatchMatchesEachRequestServedAloneOnRealKernel) {
  absl::StatusOr<std::unique_ptr<ModelRepository>> repo =
      ModelRepository::CreateDemo();
  ASSERT_TRUE(repo.ok()) << repo.status();
  absl::StatusOr<std::shared_ptr<const Model>> demo = (*repo)->Get("demo", 0);
  ASSERT_TRUE(demo.ok()) << demo.status();
  const int64_t d = (*demo)->attention.d_model;
  const int64_t heads = (*demo)->attention.num_heads;
  auto gate = MakeFakeModel("gate", &log_);
  Batcher batcher(Options());
  BlockExecutor(batcher, gate);

  struct Case {
    int64_t batch, q_len, kv_len;
    bool causal, weights, key_lengths;
  };
  const Case cases[] = {
      {1, 1, 1, false, false, false}, {1, 16, 16, false, true, false},
      {2, 5, 5, true, false, false},  {1, 3, 9, false, true, false},
      {3, 7, 11, false, false, true}, {1, 33, 33, true, true, false},
  };
  std::vector<AttentionJob> jobs;
  for (size_t i = 0; i < std::size(cases); ++i) {
    const Case& c = cases[i];
    AttentionJob job;
    job.model = *demo;
    job.batch = c.batch;
    job.q_len = c.q_len;
    job.kv_len = c.kv_len;
    job.query = testing::RandomValues(c.batch * c.q_len * d, 10 + i);
    if (c.kv_len != c.q_len) {
      job.key = testing::RandomValues(c.batch * c.kv_len * d, 20 + i);
      job.value = testing::RandomValues(c.batch * c.kv_len * d, 30 + i);
    }
    job.causal = c.causal;
    job.return_weights = c.weights;
    if (c.key_lengths) {
      for (int64_t b = 0; b < c.batch; ++b) {
        job.key_lengths.push_back(static_cast<int32_t>(c.kv_len - 2 * b));
      }
    }
    jobs.push_back(job);
    BatchTask task;
    task.job = std::move(job);
    task.done = completions_.Callback("c" + std::to_string(i));
    ASSERT_TRUE(batcher.Submit(std::move(task)).ok());
  }
  // Past the demo model's max_queue_delay_us: the batch leaves at once.
  clock_.Advance(absl::Seconds(1));
  log_.Open();
  std::vector<Completions::Done> done = completions_.Await(1 + jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Completions::Done& got = done[i + 1];
    ASSERT_EQ(got.id, "c" + std::to_string(i));
    ASSERT_TRUE(got.status.ok()) << got.id << ": " << got.status;
    EXPECT_EQ(got.result.timing.batch_requests,
              static_cast<int32_t>(jobs.size()));
    const AttentionJob& job = jobs[i];
    std::vector<float> alone(job.batch * job.q_len * d);
    std::vector<float> alone_weights(
        job.return_weights ? job.batch * heads * job.q_len * job.kv_len : 0);
    kernels::AttentionOutput out;
    out.output = alone.data();
    out.weights = job.return_weights ? alone_weights.data() : nullptr;
    ASSERT_TRUE((*demo)->kernel->Forward(job.MakeKernelInput(), out).ok());
    ASSERT_EQ(got.result.output.size(), alone.size());
    for (size_t k = 0; k < alone.size(); ++k) {
      ASSERT_NEAR(got.result.output[k], alone[k], 1e-5)
          << got.id << " output[" << k << "]";
    }
    ASSERT_EQ(got.result.weights.size(), alone_weights.size());
    for (size_t k = 0; k < alone_weights.size(); ++k) {
      ASSERT_NEAR(got.result.weights[k], alone_weights[k], 1e-5)
          << got.id << " weights[" << k << "]";
    }
  }
}

}  // namespace
}  // namespace attn::server
