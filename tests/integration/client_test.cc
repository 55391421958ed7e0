// attn::Client (sync and async) against a real attn_server serving the
// built-in demo model (d_model 256, 4 heads).
#include <atomic>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/attn_client.h"
#include "gtest/gtest.h"
#include "tests/integration/server_process.h"

#ifndef ATTN_SERVER_PATH
#error "ATTN_SERVER_PATH must be defined by CMake"
#endif

namespace attn {
namespace {

constexpr int64_t kDModel = 256;

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

v1::AttendRequest DemoRequest(const std::vector<float>& values,
                              std::vector<int64_t> shape) {
  v1::AttendRequest request;
  request.set_model("demo");
  absl::StatusOr<v1::Tensor> query = MakeTensor(values, shape);
  EXPECT_TRUE(query.ok()) << query.status();
  *request.mutable_query() = *query;
  return request;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  }
  return m;
}

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new testing::ServerProcess;
    absl::StatusOr<std::string> target =
        server_->Start(ATTN_SERVER_PATH, {}, absl::Seconds(60));
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = new std::string(*target);
  }

  static void TearDownTestSuite() {
    absl::StatusOr<int> code = server_->Stop(absl::Seconds(30));
    EXPECT_TRUE(code.ok()) << code.status();
    if (code.ok()) {
      EXPECT_EQ(*code, 0) << "attn_server exit code after SIGTERM";
    }
    delete server_;
    delete target_;
  }

  void SetUp() override {
    ASSERT_NE(target_, nullptr);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(*target_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  // Sync Attend; output as floats.
  std::vector<float> AttendOrDie(const v1::AttendRequest& request) {
    absl::StatusOr<v1::AttendResponse> response =
        client_->Attend(request, Deadline());
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    absl::StatusOr<std::vector<float>> out = TensorToFloats(response->output());
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : std::vector<float>{};
  }

  static testing::ServerProcess* server_;
  static std::string* target_;
  std::unique_ptr<Client> client_;
};

testing::ServerProcess* ClientTest::server_ = nullptr;
std::string* ClientTest::target_ = nullptr;

TEST_F(ClientTest, HealthIsServing) {
  absl::StatusOr<HealthStatus> health = client_->Health("", Deadline());
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kServing);
}

TEST_F(ClientTest, ListAndGetModels) {
  absl::StatusOr<v1::ListModelsResponse> models =
      client_->ListModels(Deadline());
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->models(0).name(), "demo");
  absl::StatusOr<v1::ModelInfo> demo = client_->GetModel("demo", 0, Deadline());
  ASSERT_TRUE(demo.ok()) << demo.status();
  EXPECT_EQ(demo->d_model(), kDModel);
  EXPECT_EQ(demo->num_heads(), 4);
  EXPECT_EQ(client_->GetModel("nope", 0, Deadline()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, SyncAttendShapeAndFinite) {
  const std::vector<float> x = RandomValues(2 * 8 * kDModel, 1);
  absl::StatusOr<v1::AttendResponse> response =
      client_->Attend(DemoRequest(x, {2, 8, kDModel}), Deadline());
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(std::vector<int64_t>(response->output().shape().begin(),
                                 response->output().shape().end()),
            (std::vector<int64_t>{2, 8, kDModel}));
  EXPECT_EQ(response->model(), "demo");
  EXPECT_EQ(response->version(), 1);
  absl::StatusOr<std::vector<float>> out = TensorToFloats(response->output());
  ASSERT_TRUE(out.ok()) << out.status();
  for (float v : *out) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(ClientTest, BatchItemsAreIndependent) {
  // Item 1 of a [2, S, D] batch equals the same sequence sent alone as a
  // rank-2 [S, D] query.
  const int64_t s = 6;
  const std::vector<float> x = RandomValues(2 * s * kDModel, 2);
  const std::vector<float> batched =
      AttendOrDie(DemoRequest(x, {2, s, kDModel}));
  const std::vector<float> second(x.begin() + s * kDModel, x.end());
  const std::vector<float> alone =
      AttendOrDie(DemoRequest(second, {s, kDModel}));
  ASSERT_EQ(batched.size(), static_cast<size_t>(2 * s * kDModel));
  const std::vector<float> batched_second(batched.begin() + s * kDModel,
                                          batched.end());
  EXPECT_LE(MaxAbsDiff(batched_second, alone), 1e-5);
}

TEST_F(ClientTest, AsyncAttendMatchesSync) {
  constexpr int kCalls = 16;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> expected;
  for (int i = 0; i < kCalls; ++i) {
    inputs.push_back(RandomValues(3 * kDModel, 100 + i));
    expected.push_back(AttendOrDie(DemoRequest(inputs.back(), {3, kDModel})));
  }
  absl::Mutex mu;
  std::vector<absl::StatusOr<v1::AttendResponse>> results(
      kCalls, absl::UnknownError("callback not run"));
  absl::BlockingCounter done(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    client_->AttendAsync(DemoRequest(inputs[i], {3, kDModel}), Deadline(),
                         [&, i](absl::StatusOr<v1::AttendResponse> response) {
                           {
                             absl::MutexLock lock(&mu);
                             results[i] = std::move(response);
                           }
                           done.DecrementCount();
                         });
  }
  done.Wait();
  absl::MutexLock lock(&mu);
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status();
    absl::StatusOr<std::vector<float>> out =
        TensorToFloats(results[i]->output());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_LE(MaxAbsDiff(*out, expected[i]), 1e-5) << "call " << i;
  }
}

TEST_F(ClientTest, AsyncErrorReachesCallback) {
  v1::AttendRequest request =
      DemoRequest(RandomValues(kDModel, 3), {1, kDModel});
  request.set_model("no_such_model");
  absl::Notification done;
  absl::Status status;
  client_->AttendAsync(request, Deadline(),
                       [&](absl::StatusOr<v1::AttendResponse> response) {
                         status = response.status();
                         done.Notify();
                       });
  done.WaitForNotification();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_FALSE(status.message().empty());
}

TEST_F(ClientTest, DestructorWaitsForPendingAsyncCalls) {
  std::atomic<int> called{0};
  {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(*target_);
    ASSERT_TRUE(client.ok());
    for (int i = 0; i < 4; ++i) {
      (*client)->AttendAsync(
          DemoRequest(RandomValues(4 * kDModel, 7), {4, kDModel}), Deadline(),
          [&](absl::StatusOr<v1::AttendResponse>) { called.fetch_add(1); });
    }
  }  // ~Client blocks until every callback ran
  EXPECT_EQ(called.load(), 4);
}

TEST_F(ClientTest, ErrorsKeepServerCode) {
  v1::AttendRequest request =
      DemoRequest(RandomValues(2 * 100, 4), {2, 100});  // wrong d_model
  EXPECT_EQ(client_->Attend(request, Deadline()).status().code(),
            absl::StatusCode::kInvalidArgument);
  request = DemoRequest(RandomValues(2 * kDModel, 5), {2, kDModel});
  request.set_version(99);
  EXPECT_EQ(client_->Attend(request, Deadline()).status().code(),
            absl::StatusCode::kNotFound);
  // A deadline already in the past.
  EXPECT_EQ(
      client_->Attend(request, absl::Now() - absl::Seconds(1)).status().code(),
      absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ClientTest, HalfPrecisionRequestsAreClose) {
  const std::vector<float> x = RandomValues(4 * kDModel, 6);
  const std::vector<float> f32 = AttendOrDie(DemoRequest(x, {4, kDModel}));
  for (v1::DataType dtype : {v1::BFLOAT16, v1::FLOAT16}) {
    v1::AttendRequest request;
    request.set_model("demo");
    *request.mutable_query() = *MakeTensor(x, {4, kDModel}, dtype);
    EXPECT_LE(MaxAbsDiff(AttendOrDie(request), f32), 5e-2)
        << v1::DataType_Name(dtype);
  }
}

// A session's steps equal the last rows of one stateless causal Attend
// over the whole prefix (the server's own full-sequence path).
TEST_F(ClientTest, SessionStepsMatchStatelessCausal) {
  constexpr int64_t kPrefix = 10, kSteps = 4, kTotal = kPrefix + kSteps;
  const std::vector<float> x = RandomValues(kTotal * kDModel, 7);
  auto rows = [&](int64_t from, int64_t to) {
    return *MakeTensor(
        absl::MakeConstSpan(x).subspan(from * kDModel, (to - from) * kDModel),
        {to - from, kDModel});
  };
  auto full = [&](int64_t n) {
    v1::AttendRequest request;
    request.set_model("demo");
    request.set_causal(true);
    *request.mutable_query() = rows(0, n);
    return AttendOrDie(request);
  };
  absl::StatusOr<v1::AttendResponse> r = client_->StartSession(
      "demo", 0, "cpp-session", rows(0, kPrefix), Deadline());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->session_length(), kPrefix);
  EXPECT_LE(MaxAbsDiff(*TensorToFloats(r->output()), full(kPrefix)), 1e-4);
  for (int64_t p = kPrefix; p < kTotal; ++p) {
    r = client_->Step("demo", 0, "cpp-session", rows(p, p + 1), p, Deadline());
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->session_length(), p + 1);
    const std::vector<float> all = full(p + 1);
    const std::vector<float> last(all.end() - kDModel, all.end());
    EXPECT_LE(MaxAbsDiff(*TensorToFloats(r->output()), last), 1e-4) << p;
  }
  // A retried step (position already applied) is refused, not appended.
  r = client_->Step("demo", 0, "cpp-session", rows(kTotal - 1, kTotal),
                    kTotal - 1, Deadline());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<int64_t> ended =
      client_->EndSession("demo", 0, "cpp-session", Deadline());
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(*ended, kTotal);
  r = client_->Step("demo", 0, "cpp-session", rows(0, 1), kTotal, Deadline());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(
      client_->EndSession("demo", 0, "cpp-session", Deadline()).status().code(),
      absl::StatusCode::kNotFound);
}

TEST(ClientCreateTest, EmptyTargetIsInvalid) {
  EXPECT_EQ(Client::Create("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientCreateTest, UnreachableServerIsUnavailable) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create("127.0.0.1:1");
  ASSERT_TRUE(client.ok());
  absl::StatusOr<HealthStatus> health =
      (*client)->Health("", absl::Now() + absl::Seconds(5));
  ASSERT_FALSE(health.ok());
  EXPECT_TRUE(health.status().code() == absl::StatusCode::kUnavailable ||
              health.status().code() == absl::StatusCode::kDeadlineExceeded)
      << health.status();
}

}  // namespace
}  // namespace attn
