// SessionTable and KvBlockPool: session rules, block accounting, LRU
// eviction, expiry and scoping, on a fake clock (no kernel involved).
#include "server/serving/session_table.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/service/fake_clock.h"
#include "tests/service/fake_model.h"

namespace attn::server {
namespace {

using testing::FakeClock;
using testing::MakeFakeModel;

// Records what the table reports. Thread-safe.
class RecordingObserver final : public SessionObserver {
 public:
  void CacheBytes(int64_t used, int64_t free) override {
    absl::MutexLock lock(&mu_);
    used_ = used;
    free_ = free;
    max_used_ = std::max(max_used_, used);
  }
  void SessionsActive(const std::string& model, int64_t count) override {
    absl::MutexLock lock(&mu_);
    active_[model] = count;
  }
  void SessionEvicted(const std::string& model, const char* reason) override {
    absl::MutexLock lock(&mu_);
    ++evictions_[reason];
  }
  void SessionEnded(int64_t length) override {
    absl::MutexLock lock(&mu_);
    ended_.push_back(length);
  }
  int64_t used() {
    absl::MutexLock lock(&mu_);
    return used_;
  }
  int64_t free_bytes() {
    absl::MutexLock lock(&mu_);
    return free_;
  }
  int64_t max_used() {
    absl::MutexLock lock(&mu_);
    return max_used_;
  }
  int64_t active(const std::string& model) {
    absl::MutexLock lock(&mu_);
    return active_[model];
  }
  int64_t evictions(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    return evictions_[reason];
  }
  std::vector<int64_t> ended() {
    absl::MutexLock lock(&mu_);
    return ended_;
  }

 private:
  absl::Mutex mu_;
  int64_t used_ = 0, free_ = 0, max_used_ = 0;
  std::map<std::string, int64_t> active_;
  std::map<std::string, int64_t> evictions_;
  std::vector<int64_t> ended_;
};

// d_model 8, 2 heads of 4: a 16-token block of K+V in fp32 is
// 2 * 2 * 16 * 4 * 4 = 1024 bytes.
constexpr int64_t kBlockBytes = 1024;

class SessionTableTest : public ::testing::Test {
 protected:
  void Make(int64_t blocks, int64_t max_seq = 256, int64_t max_sessions = 64,
            double idle_timeout_s = 60) {
    auto model = std::const_pointer_cast<Model>(
        MakeFakeModel("m", nullptr, BatchingOptions(), 8, 2, max_seq));
    model->config.sessions.max_sessions = max_sessions;
    model->config.sessions.idle_timeout_s = idle_timeout_s;
    model_ = model;
    SessionTable::Options options;
    options.kv_cache_bytes = blocks * kBlockBytes + kBlockBytes / 2;
    options.clock = &clock_;
    options.observer = &observer_;
    options.sweep_interval = absl::Hours(1);  // the tests call ExpireIdle
    auto table = SessionTable::Create(options, {model_});
    ASSERT_TRUE(table.ok()) << table.status();
    table_ = std::move(*table);
  }
  SessionKey Key(const std::string& id, const std::string& scope = "") {
    return SessionKey{scope, "m", 1, id};
  }
  // Starts `id` with `tokens` tokens and applies the step.
  absl::StatusOr<int64_t> StartApplied(const std::string& id, int64_t tokens,
                                       const std::string& scope = "") {
    auto step = table_->BeginStep(Key(id, scope), model_, true, 0, tokens);
    if (!step.ok()) return step.status();
    return (*step)->Finish(true);
  }
  absl::StatusOr<int64_t> StepApplied(const std::string& id, int64_t position,
                                      int64_t tokens) {
    auto step = table_->BeginStep(Key(id), model_, false, position, tokens);
    if (!step.ok()) return step.status();
    return (*step)->Finish(true);
  }

  FakeClock clock_;
  RecordingObserver observer_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<SessionTable> table_;
};

TEST_F(SessionTableTest, PoolIsCutIntoWholeBlocksWithinTheBudget) {
  Make(5);
  EXPECT_EQ(table_->page_bytes(), kBlockBytes);
  EXPECT_EQ(table_->capacity_bytes(), 5 * kBlockBytes);
  EXPECT_EQ(observer_.used(), 0);
  EXPECT_EQ(observer_.free_bytes(), 5 * kBlockBytes);
}

TEST_F(SessionTableTest, BudgetBelowOneBlockIsRefused) {
  SessionTable::Options options;
  options.kv_cache_bytes = kBlockBytes - 1;
  auto table = SessionTable::Create(
      options, {MakeFakeModel("m", nullptr, BatchingOptions(), 8, 2)});
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SessionTableTest, StepsAppendAtTheSessionsLengthInBlocks) {
  Make(8);
  auto first = table_->BeginStep(Key("a"), model_, true, std::nullopt, 20);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)->start_position(), 0);
  EXPECT_EQ((*first)->new_tokens(), 20);
  EXPECT_EQ((*first)->block_table().size(), 2u);  // 20 tokens = 2 blocks
  EXPECT_EQ((*first)->Finish(true), 20);
  EXPECT_EQ(observer_.used(), 2 * kBlockBytes);
  auto second = table_->BeginStep(Key("a"), model_, false, 20, 13);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)->start_position(), 20);
  ASSERT_EQ((*second)->block_table().size(), 3u);  // 33 tokens
  EXPECT_EQ((*second)->block_table()[0], (*first)->block_table()[0]);
  EXPECT_EQ((*second)->block_table()[1], (*first)->block_table()[1]);
  EXPECT_EQ((*second)->Finish(true), 33);
  EXPECT_EQ(observer_.active("m"), 1);
  EXPECT_EQ(table_->LiveSessions("m", 1), 1);
}

TEST_F(SessionTableTest, EveryRuleHasItsCode) {
  Make(8, /*max_seq=*/40);
  ASSERT_TRUE(StartApplied("a", 10).ok());
  auto again = table_->BeginStep(Key("a"), model_, true, 0, 1);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  auto unknown = table_->BeginStep(Key("b"), model_, false, 0, 1);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("full prefix"), std::string::npos);
  auto stale = table_->BeginStep(Key("a"), model_, false, 9, 1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.status().message().find("session_position is 9"),
            std::string::npos);
  EXPECT_NE(stale.status().message().find("holds 10 tokens"),
            std::string::npos);
  auto too_long = table_->BeginStep(Key("a"), model_, false, 10, 31);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  auto start_at = table_->BeginStep(Key("c"), model_, true, 5, 1);
  EXPECT_EQ(start_at.status().code(), absl::StatusCode::kFailedPrecondition);
  // One step at a time.
  auto running = table_->BeginStep(Key("a"), model_, false, 10, 1);
  ASSERT_TRUE(running.ok());
  auto concurrent = table_->BeginStep(Key("a"), model_, false, 10, 1);
  EXPECT_EQ(concurrent.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*running)->Finish(true), 11);
  EXPECT_TRUE(StepApplied("a", 11, 1).ok());
}

TEST_F(SessionTableTest, AbandonedStepsChangeNothing) {
  Make(8);
  {
    auto start = table_->BeginStep(Key("a"), model_, true, 0, 5);
    ASSERT_TRUE(start.ok());
    // Destroyed unfinished: the start never happened for the client.
  }
  EXPECT_EQ(table_->LiveSessions("m", 1), 0);
  EXPECT_EQ(observer_.used(), 0);
  ASSERT_TRUE(StartApplied("a", 5).ok());
  auto step = table_->BeginStep(Key("a"), model_, false, 5, 20);
  ASSERT_TRUE(step.ok());
  EXPECT_EQ((*step)->Finish(false), 5);
  EXPECT_EQ(observer_.used(), kBlockBytes);  // the extra block is returned
  EXPECT_EQ(StepApplied("a", 5, 1).value(), 6);
}

TEST_F(SessionTableTest, ScopesModelsAndVersionsNeverShareIds) {
  Make(8);
  ASSERT_TRUE(StartApplied("a", 3, "token-1").ok());
  auto other = table_->BeginStep(Key("a", "token-2"), model_, false, 3, 1);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(StartApplied("a", 4, "token-2").ok());
  SessionKey v2{"token-1", "m", 2, "a"};
  EXPECT_EQ(table_->End(v2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(table_->End(Key("a", "token-1")).value(), 3);
  EXPECT_EQ(table_->End(Key("a", "token-2")).value(), 4);
  EXPECT_EQ(table_->End(Key("a", "token-2")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(observer_.used(), 0);
  EXPECT_EQ(observer_.evictions("cache_full"), 0);  // EndSession not counted
}

TEST_F(SessionTableTest, FullCacheEvictsLeastRecentlyUsedIdleSessions) {
  Make(4);
  ASSERT_TRUE(StartApplied("a", 16).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(StartApplied("b", 16).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(StartApplied("c", 16).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(StepApplied("a", 16, 1).ok());  // a is now the most recent
  clock_.Advance(absl::Seconds(1));
  // 4 blocks in use; d needs 1: b (least recently used) goes.
  ASSERT_TRUE(StartApplied("d", 10).ok());
  EXPECT_EQ(observer_.evictions("cache_full"), 1);
  EXPECT_EQ(table_->BeginStep(Key("b"), model_, false, 16, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_LE(observer_.max_used(), table_->capacity_bytes());
}

TEST_F(SessionTableTest, BusySessionsAreNeverEvictedAndNothingIsLostInVain) {
  Make(3);
  auto a = table_->BeginStep(Key("a"), model_, true, 0, 32);  // 2 blocks
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(StartApplied("b", 16).ok());  // 1 block, idle
  // c needs 2 blocks: evicting b frees only 1 (a is busy): refused, and b
  // stays.
  auto c = table_->BeginStep(Key("c"), model_, true, 0, 32);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("--kv_cache_bytes"), std::string::npos);
  EXPECT_EQ(observer_.evictions("cache_full"), 0);
  EXPECT_EQ(table_->LiveSessions("m", 1), 2);
  // One block is possible: b is evicted.
  EXPECT_TRUE(StartApplied("c", 16).ok());
  EXPECT_EQ(observer_.evictions("cache_full"), 1);
  EXPECT_EQ((*a)->Finish(true), 32);
  EXPECT_EQ(observer_.max_used(), 3 * kBlockBytes);
}

TEST_F(SessionTableTest, MaxSessionsEvictsTheVersionsLeastRecentlyUsed) {
  Make(8, 256, /*max_sessions=*/2);
  ASSERT_TRUE(StartApplied("a", 1).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(StartApplied("b", 1).ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(StartApplied("c", 1).ok());
  EXPECT_EQ(observer_.evictions("max_sessions"), 1);
  EXPECT_EQ(table_->LiveSessions("m", 1), 2);
  EXPECT_EQ(table_->End(Key("a")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionTableTest, IdleSessionsExpire) {
  Make(8, 256, 64, /*idle_timeout_s=*/10);
  ASSERT_TRUE(StartApplied("a", 5).ok());
  ASSERT_TRUE(StartApplied("b", 5).ok());
  clock_.Advance(absl::Seconds(6));
  ASSERT_TRUE(StepApplied("b", 5, 1).ok());
  clock_.Advance(absl::Seconds(5));
  // a idle 11 s, b 5 s.
  EXPECT_EQ(table_->ExpireIdle(clock_.Now()), 1);
  EXPECT_EQ(observer_.evictions("idle_timeout"), 1);
  EXPECT_EQ(table_->BeginStep(Key("a"), model_, false, 5, 1).status().code(),
            absl::StatusCode::kNotFound);
  // Looked up after its timeout, before a sweep: expired too.
  clock_.Advance(absl::Seconds(10));
  EXPECT_EQ(table_->BeginStep(Key("b"), model_, false, 6, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(observer_.evictions("idle_timeout"), 2);
  EXPECT_EQ(observer_.used(), 0);
  EXPECT_EQ(observer_.active("m"), 0);
}

TEST_F(SessionTableTest, EndingABusySessionFreesItsBlocksWhenTheStepEnds) {
  Make(4);
  auto a = table_->BeginStep(Key("a"), model_, true, 0, 20);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(table_->End(Key("a")).value(), 0);
  EXPECT_EQ(observer_.used(), 2 * kBlockBytes);  // the step still writes
  (*a)->Finish(true);
  EXPECT_EQ(observer_.used(), 0);
  EXPECT_TRUE(StartApplied("a", 1).ok());  // the id is free again
}

}  // namespace
}  // namespace attn::server
