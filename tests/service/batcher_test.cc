#include "server/batcher.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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
  EXPECT_EQ(log_.calls().size(), 4u);
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
  EXPECT_EQ(log_.calls().size(), 3u);
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

TEST_F(BatcherTest, RoundRobinAcrossModels) {
  auto x = MakeFakeModel("x", &log_);
  auto y = MakeFakeModel("y", &log_);
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
  EXPECT_EQ(log_.calls().size(), static_cast<size_t>(3 + accepted));
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

}  // namespace
}  // namespace attn::server
