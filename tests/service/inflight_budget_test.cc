// InflightBudget: all-or-nothing admission, exact return of bytes on every
// path (destruction, Release, move), and messages that name the flag.
#include "server/serving/inflight_budget.h"

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attn::server {
namespace {

using ::testing::HasSubstr;

TEST(InflightBudgetTest, AdmitsUpToTheLimitAndReturnsOnDestruction) {
  InflightBudget budget(100);
  {
    auto a = budget.Reserve(60);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(budget.in_use(), 60);
    auto b = budget.Reserve(41);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(b.status().message(), HasSubstr("--max_inflight_bytes=100"));
    EXPECT_THAT(b.status().message(), HasSubstr("budget is full"));
    EXPECT_EQ(budget.in_use(), 60);  // a refusal takes nothing
    auto c = budget.Reserve(40);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(budget.in_use(), 100);
  }
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(InflightBudgetTest, LargerThanTheWholeBudgetSaysSo) {
  InflightBudget budget(10);
  auto r = budget.Reserve(11);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more than the whole"));
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(InflightBudgetTest, MoveAndReleaseReturnExactlyOnce) {
  InflightBudget budget(100);
  auto r = budget.Reserve(30);
  ASSERT_TRUE(r.ok());
  InflightBudget::Reservation moved = *std::move(r);
  EXPECT_EQ(budget.in_use(), 30);
  InflightBudget::Reservation other;
  other = std::move(moved);
  EXPECT_EQ(budget.in_use(), 30);
  other.Release();
  other.Release();
  EXPECT_EQ(budget.in_use(), 0);
  auto again = budget.Reserve(100);
  ASSERT_TRUE(again.ok());
  auto replace = budget.Reserve(0);
  ASSERT_TRUE(replace.ok());
  *again = *std::move(replace);  // assigning over a reservation returns it
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(InflightBudgetTest, ConcurrentReservationsNeverExceedTheLimit) {
  InflightBudget budget(1000);
  std::vector<std::thread> threads;
  std::atomic<int64_t> max_seen{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        auto r = budget.Reserve(300);
        const int64_t used = budget.in_use();
        int64_t seen = max_seen.load();
        while (used > seen && !max_seen.compare_exchange_weak(seen, used)) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(max_seen.load(), 1000);
  EXPECT_EQ(budget.in_use(), 0);
}

TEST(InflightBudgetTest, DefaultIsAQuarterOfMemoryAtMostFourGiB) {
  const int64_t limit = InflightBudget::DefaultLimit();
  EXPECT_GT(limit, 0);
  EXPECT_LE(limit, int64_t{4} << 30);
}

}  // namespace
}  // namespace attn::server
