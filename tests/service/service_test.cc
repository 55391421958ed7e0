// End to end: the real server (demo model, real oneDNN kernel) on
// 127.0.0.1 with an ephemeral port, called through the generated stub, with
// outputs checked against the independent reference implementation.
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "attn/v1/attention.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc_wire.pb.h"  // generated from tests/service/grpc_wire.proto
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/client_unary_call.h"
#include "gtest/gtest.h"
#include "server/models/demo_model.h"
#include "server/models/model_repository.h"
#include "server/server_builder.h"
#include "tests/kernels/reference_attention.h"
#include "tests/service/fake_model.h"
#include "tests/service/test_tensors.h"

namespace attn::server {
namespace {

using testing::BoolTensor;
using ::testing::HasSubstr;
using testing::MakeTensor;
using testing::RandomValues;
using testing::Values;
namespace wire = ::attn::testing::wire;

constexpr int64_t kD = kDemoDModel;    // 256
constexpr int64_t kH = kDemoNumHeads;  // 4

// Inputs of one request, as fp32 values (after wire rounding), for the
// reference.
struct Inputs {
  int64_t batch = 1, q_len = 0, kv_len = 0;
  std::vector<float> query, key, value;  // key/value empty: self-attention
  bool causal = false;
  std::vector<int32_t> key_lengths;
  kernels::MaskKind mask_kind = kernels::MaskKind::kNone;
  std::vector<float> additive_mask;
  std::vector<uint8_t> bool_mask;
  bool mask_per_batch = false;
};

reference::ReferenceResult Reference(const Inputs& in) {
  kernels::AttentionConfig config;
  config.d_model = kD;
  config.num_heads = kH;
  kernels::AttentionInput k;
  k.batch = in.batch;
  k.q_len = in.q_len;
  k.kv_len = in.kv_len;
  k.query = in.query.data();
  k.key = in.key.empty() ? k.query : in.key.data();
  k.value = in.value.empty() ? k.key : in.value.data();
  k.causal = in.causal;
  k.key_lengths = in.key_lengths.empty() ? nullptr : in.key_lengths.data();
  k.mask_kind = in.mask_kind;
  k.mask = in.mask_kind == kernels::MaskKind::kAdditive
               ? static_cast<const void*>(in.additive_mask.data())
               : static_cast<const void*>(in.bool_mask.data());
  if (in.mask_kind == kernels::MaskKind::kNone) k.mask = nullptr;
  k.mask_per_batch = in.mask_per_batch;
  static const kernels::AttentionWeights* const weights =
      new kernels::AttentionWeights(DemoWeights());
  return reference::ReferenceAttention(config, *weights, k);
}

// Values as they arrive at the server after encoding as `dtype`.
std::vector<float> WireRounded(const std::vector<float>& v,
                               v1::DataType dtype) {
  v1::Tensor t;
  EncodeFloatTensor(v.data(), {static_cast<int64_t>(v.size())}, dtype, &t);
  return Values(t);
}

// |actual - expected| <= 1e-4 + rel * |expected|, rel from the output dtype.
void ExpectClose(const std::vector<float>& actual,
                 const std::vector<double>& expected, v1::DataType dtype,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  const double rel = dtype == v1::BFLOAT16  ? std::ldexp(1.0, -8)
                     : dtype == v1::FLOAT16 ? std::ldexp(1.0, -10)
                                            : 0.0;
  int bad = 0;
  for (size_t i = 0; i < actual.size() && bad < 5; ++i) {
    const double tol = 1e-4 + rel * std::fabs(expected[i]);
    if (!(std::fabs(actual[i] - expected[i]) <= tol)) {
      ++bad;
      ADD_FAILURE() << what << "[" << i << "] = " << actual[i] << ", reference "
                    << expected[i] << " (tol " << tol << ")";
    }
  }
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ModelRepository>> repo =
        ModelRepository::CreateDemo();
    ASSERT_TRUE(repo.ok()) << repo.status();
    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.threads = 1;
    absl::StatusOr<std::unique_ptr<AttentionServer>> server =
        AttentionServer::Start(options, std::move(*repo));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->port(), 0);
    channel_ =
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                            grpc::InsecureChannelCredentials());
    stub_ = v1::AttentionService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(5));
  }

  static void SetDeadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::seconds(30));
  }

  grpc::Status Attend(const v1::AttendRequest& request,
                      v1::AttendResponse* response) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    return stub_->Attend(&ctx, request, response);
  }

  // Builds the request for `in` (values rounded to `dtype` in place, so the
  // reference sees what the server sees).
  static v1::AttendRequest MakeRequest(Inputs* in, v1::DataType dtype,
                                       bool rank3 = true) {
    v1::AttendRequest r;
    r.set_model("demo");
    r.set_request_id("req-1");
    auto shape = [&](int64_t s) {
      return rank3 ? std::vector<int64_t>{in->batch, s, kD}
                   : std::vector<int64_t>{s, kD};
    };
    in->query = WireRounded(in->query, dtype);
    *r.mutable_query() = MakeTensor(shape(in->q_len), in->query, dtype);
    if (!in->key.empty()) {
      in->key = WireRounded(in->key, dtype);
      *r.mutable_key() = MakeTensor(shape(in->kv_len), in->key, dtype);
    }
    if (!in->value.empty()) {
      in->value = WireRounded(in->value, dtype);
      *r.mutable_value() = MakeTensor(shape(in->kv_len), in->value, dtype);
    }
    for (int32_t l : in->key_lengths) r.add_key_lengths(l);
    const std::vector<int64_t> mask_shape =
        in->mask_per_batch
            ? std::vector<int64_t>{in->batch, in->q_len, in->kv_len}
            : std::vector<int64_t>{in->q_len, in->kv_len};
    if (in->mask_kind == kernels::MaskKind::kBoolean) {
      *r.mutable_attn_mask() = BoolTensor(mask_shape, in->bool_mask);
    } else if (in->mask_kind == kernels::MaskKind::kAdditive) {
      *r.mutable_attn_mask() = MakeTensor(mask_shape, in->additive_mask);
    }
    return r;
  }

  // Sends `in` and checks output (and weights) against the reference.
  void CheckAgainstReference(Inputs in, v1::DataType in_dtype,
                             v1::DataType out_dtype, bool weights,
                             bool rank3 = true) {
    v1::AttendRequest r = MakeRequest(&in, in_dtype, rank3);
    r.set_causal(in.causal);
    r.set_output_dtype(out_dtype);
    r.set_return_attention_weights(weights);
    v1::AttendResponse response;
    grpc::Status s = Attend(r, &response);
    ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
    EXPECT_EQ(response.model(), "demo");
    EXPECT_EQ(response.version(), 1);
    EXPECT_EQ(response.request_id(), "req-1");
    EXPECT_EQ(response.timing().batch_requests(), 1);
    EXPECT_GE(response.timing().queue_us(), 0);
    EXPECT_EQ(response.output().dtype(), out_dtype);
    if (rank3) {
      EXPECT_THAT(response.output().shape(),
                  ::testing::ElementsAre(in.batch, in.q_len, kD));
    } else {
      EXPECT_THAT(response.output().shape(),
                  ::testing::ElementsAre(in.q_len, kD));
    }
    reference::ReferenceResult ref = Reference(in);
    ExpectClose(Values(response.output()), ref.output, out_dtype, "output");
    if (weights) {
      EXPECT_THAT(response.attention_weights().shape(),
                  ::testing::ElementsAre(in.batch, kH, in.q_len, in.kv_len));
      ExpectClose(Values(response.attention_weights()), ref.weights, out_dtype,
                  "weights");
    } else {
      EXPECT_FALSE(response.has_attention_weights());
    }
  }

  static Inputs SelfAttention(int64_t batch, int64_t len, uint32_t seed) {
    Inputs in;
    in.batch = batch;
    in.q_len = in.kv_len = len;
    in.query = RandomValues(batch * len * kD, seed);
    return in;
  }

  static Inputs CrossAttention(int64_t batch, int64_t q_len, int64_t kv_len,
                               uint32_t seed) {
    Inputs in;
    in.batch = batch;
    in.q_len = q_len;
    in.kv_len = kv_len;
    in.query = RandomValues(batch * q_len * kD, seed);
    in.key = RandomValues(batch * kv_len * kD, seed + 1);
    in.value = RandomValues(batch * kv_len * kD, seed + 2);
    return in;
  }

  std::unique_ptr<AttentionServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

TEST_F(ServiceTest, SelfAttentionMatchesReference) {
  CheckAgainstReference(SelfAttention(2, 5, 1), v1::FLOAT32, v1::FLOAT32,
                        false);
}

TEST_F(ServiceTest, Rank2QueryGivesRank2Output) {
  CheckAgainstReference(SelfAttention(1, 7, 2), v1::FLOAT32, v1::FLOAT32, true,
                        /*rank3=*/false);
}

TEST_F(ServiceTest, CrossAttentionMatchesReference) {
  CheckAgainstReference(CrossAttention(2, 3, 9, 3), v1::FLOAT32, v1::FLOAT32,
                        true);
}

TEST_F(ServiceTest, KeyWithoutValueUsesKeyAsValue) {
  Inputs in = CrossAttention(1, 4, 6, 4);
  in.value.clear();
  CheckAgainstReference(in, v1::FLOAT32, v1::FLOAT32, false);
}

TEST_F(ServiceTest, CausalMatchesReference) {
  Inputs self = SelfAttention(2, 6, 5);
  self.causal = true;
  CheckAgainstReference(self, v1::FLOAT32, v1::FLOAT32, true);
  Inputs cross = CrossAttention(1, 4, 7, 6);  // offset Sk - Sq = 3
  cross.causal = true;
  CheckAgainstReference(cross, v1::FLOAT32, v1::FLOAT32, true);
}

TEST_F(ServiceTest, KeyLengthsMatchReference) {
  Inputs in = CrossAttention(3, 4, 6, 7);
  in.key_lengths = {6, 2, 0};  // the last item has every key masked: zeros
  CheckAgainstReference(in, v1::FLOAT32, v1::FLOAT32, true);
}

TEST_F(ServiceTest, BoolMaskMatchesReference) {
  Inputs in = SelfAttention(2, 5, 8);
  in.mask_kind = kernels::MaskKind::kBoolean;
  in.mask_per_batch = true;
  std::mt19937 rng(9);
  in.bool_mask.resize(2 * 5 * 5);
  for (uint8_t& b : in.bool_mask) b = rng() % 3 == 0;
  CheckAgainstReference(in, v1::FLOAT32, v1::FLOAT32, true);
  in.mask_per_batch = false;
  in.bool_mask.resize(5 * 5);
  CheckAgainstReference(in, v1::FLOAT32, v1::FLOAT32, false);
}

TEST_F(ServiceTest, AdditiveMaskMatchesReference) {
  Inputs in = CrossAttention(1, 3, 5, 10);
  in.mask_kind = kernels::MaskKind::kAdditive;
  in.additive_mask = RandomValues(3 * 5, 11);
  in.additive_mask[2] = -std::numeric_limits<float>::infinity();
  CheckAgainstReference(in, v1::FLOAT32, v1::FLOAT32, true);
}

TEST_F(ServiceTest, HalfPrecisionInputsAndOutputs) {
  CheckAgainstReference(SelfAttention(2, 4, 12), v1::BFLOAT16, v1::FLOAT32,
                        false);
  CheckAgainstReference(SelfAttention(2, 4, 13), v1::FLOAT16, v1::FLOAT32,
                        true);
  CheckAgainstReference(CrossAttention(1, 3, 5, 14), v1::FLOAT32, v1::BFLOAT16,
                        true);
  CheckAgainstReference(CrossAttention(1, 3, 5, 15), v1::BFLOAT16, v1::FLOAT16,
                        true);
}

TEST_F(ServiceTest, EveryBadInputClassHasItsStatusCode) {
  struct Case {
    std::string name;
    std::function<void(v1::AttendRequest*)> mutate;
    grpc::StatusCode code;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"unknown model", [](auto* r) { r->set_model("nope"); },
       grpc::StatusCode::NOT_FOUND, "nope"},
      {"unknown version", [](auto* r) { r->set_version(7); },
       grpc::StatusCode::NOT_FOUND, "7"},
      {"empty model", [](auto* r) { r->set_model(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "model is empty"},
      {"negative version", [](auto* r) { r->set_version(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "version is -1"},
      {"query missing", [](auto* r) { r->clear_query(); },
       grpc::StatusCode::INVALID_ARGUMENT, "query is missing"},
      {"query rank",
       [](auto* r) { *r->mutable_query() = testing::RandomTensor({kD}, 1); },
       grpc::StatusCode::INVALID_ARGUMENT, "query has rank 1"},
      {"d_model",
       [](auto* r) {
         *r->mutable_query() = testing::RandomTensor({1, 2, 300}, 1);
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "query last dim is 300, model 'demo' has d_model 256"},
      {"too long", [](auto* r) { r->mutable_query()->set_shape(1, 100000); },
       grpc::StatusCode::INVALID_ARGUMENT, "max_sequence_length"},
      {"byte length",
       [](auto* r) { r->mutable_query()->mutable_data()->resize(10); },
       grpc::StatusCode::INVALID_ARGUMENT, "query data has 10 bytes"},
      {"NaN",
       [](auto* r) {
         std::vector<float> v = RandomValues(2 * 3 * kD, 1);
         v[100] = std::nanf("");
         *r->mutable_query() = MakeTensor({2, 3, kD}, v);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "flat index 100"},
      {"key batch",
       [](auto* r) {
         *r->mutable_key() = testing::RandomTensor({1, 3, kD}, 2);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "key batch size is 1"},
      {"value without key",
       [](auto* r) {
         *r->mutable_value() = testing::RandomTensor({2, 3, kD}, 2);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "value is given without key"},
      {"key_lengths",
       [](auto* r) {
         r->add_key_lengths(1);
         r->add_key_lengths(9);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "key_lengths[1] is 9"},
      {"mask shape",
       [](auto* r) {
         *r->mutable_attn_mask() = BoolTensor({2, 2}, {0, 0, 0, 0});
       },
       grpc::StatusCode::INVALID_ARGUMENT, "attn_mask shape is [2, 2]"},
      {"output dtype", [](auto* r) { r->set_output_dtype(v1::BOOL); },
       grpc::StatusCode::INVALID_ARGUMENT, "output_dtype BOOL"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::AttendRequest r;
    r.set_model("demo");
    *r.mutable_query() = testing::RandomTensor({2, 3, kD}, 1);
    c.mutate(&r);
    v1::AttendResponse response;
    grpc::Status s = Attend(r, &response);
    EXPECT_EQ(s.error_code(), c.code) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.fragment));
  }
}

TEST_F(ServiceTest, OversizedMessageIsResourceExhausted) {
  // Over the 256 MiB default max message size.
  v1::AttendRequest r;
  r.set_model("demo");
  r.mutable_query()->add_shape(1);
  r.mutable_query()->set_dtype(v1::FLOAT32);
  r.mutable_query()->mutable_data()->resize((size_t{256} << 20) + 16);
  v1::AttendResponse response;
  grpc::Status s = Attend(r, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << s.error_message();
}

TEST_F(ServiceTest, StreamAnswersInOrderAndSurvivesErrors) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->AttendStream(&ctx);
  std::vector<Inputs> inputs;
  for (int i = 0; i < 5; ++i) {
    Inputs in = SelfAttention(1, 2 + i, 20 + i);
    v1::AttendRequest r = MakeRequest(&in, v1::FLOAT32);
    r.set_request_id("id-" + std::to_string(i));
    if (i == 2) r.mutable_query()->mutable_data()->resize(3);  // bad
    inputs.push_back(in);
    ASSERT_TRUE(stream->Write(r));
  }
  ASSERT_TRUE(stream->WritesDone());
  v1::AttendStreamResponse response;
  int i = 0;
  while (stream->Read(&response)) {
    SCOPED_TRACE(i);
    ASSERT_LT(i, 5);
    EXPECT_EQ(response.request_id(), "id-" + std::to_string(i));
    if (i == 2) {
      EXPECT_FALSE(response.has_response());
      EXPECT_EQ(response.error().code(), grpc::StatusCode::INVALID_ARGUMENT);
      EXPECT_THAT(response.error().message(), HasSubstr("query data has 3"));
    } else {
      ASSERT_TRUE(response.has_response());
      EXPECT_FALSE(response.has_error());
      EXPECT_EQ(response.response().request_id(), "id-" + std::to_string(i));
      ExpectClose(Values(response.response().output()),
                  Reference(inputs[i]).output, v1::FLOAT32, "output");
    }
    ++i;
  }
  EXPECT_EQ(i, 5);
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(ServiceTest, StreamWithNoRequestsEndsCleanly) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->AttendStream(&ctx);
  ASSERT_TRUE(stream->WritesDone());
  v1::AttendStreamResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, ManyStreamedRequestsAreAllAnswered) {
  // More than the per-stream read window, written before reading any.
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->AttendStream(&ctx);
  constexpr int kRequests = 100;
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      Inputs in = SelfAttention(1, 1, 100 + i);
      v1::AttendRequest r = MakeRequest(&in, v1::FLOAT32);
      r.set_request_id(std::to_string(i));
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
  });
  v1::AttendStreamResponse response;
  int i = 0;
  while (stream->Read(&response)) {
    EXPECT_EQ(response.request_id(), std::to_string(i));
    EXPECT_TRUE(response.has_response()) << response.error().message();
    ++i;
  }
  writer.join();
  EXPECT_EQ(i, kRequests);
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, ListModelsAndGetModel) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 1);
  const v1::ModelInfo& info = list.models(0);
  EXPECT_EQ(info.name(), "demo");
  EXPECT_EQ(info.version(), 1);
  EXPECT_EQ(info.d_model(), 256);
  EXPECT_EQ(info.num_heads(), 4);
  EXPECT_EQ(info.num_kv_heads(), 4);
  EXPECT_EQ(info.head_dim(), 64);
  EXPECT_EQ(info.compute_dtype(), "float32");
  EXPECT_FLOAT_EQ(info.scale(), 1.0f / 8.0f);
  EXPECT_EQ(info.source(), "<builtin>");
  // The kernels that run it, as the start-up log names them.
  EXPECT_THAT(info.implementation(), ::testing::StartsWith("core "));
  EXPECT_THAT(info.implementation(),
              ::testing::HasSubstr(", projections fp32 (oneDNN)"));
  EXPECT_THAT(info.input_dtypes(),
              ::testing::ElementsAre(v1::FLOAT32, v1::BFLOAT16, v1::FLOAT16));

  grpc::ClientContext ctx2;
  SetDeadline(&ctx2);
  v1::GetModelRequest get;
  get.set_model("demo");
  v1::ModelInfo one;
  ASSERT_TRUE(stub_->GetModel(&ctx2, get, &one).ok());
  EXPECT_EQ(one.SerializeAsString(), info.SerializeAsString());

  grpc::ClientContext ctx3;
  SetDeadline(&ctx3);
  get.set_model("missing");
  EXPECT_EQ(stub_->GetModel(&ctx3, get, &one).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx4;
  SetDeadline(&ctx4);
  get.set_model("demo");
  get.set_version(2);
  EXPECT_EQ(stub_->GetModel(&ctx4, get, &one).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& service,
                         wire::HealthCheckResponse* response) {
  const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check",
                                         grpc::internal::RpcMethod::NORMAL_RPC,
                                         channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  wire::HealthCheckRequest request;
  request.set_service(service);
  return grpc::internal::BlockingUnaryCall<
      wire::HealthCheckRequest, wire::HealthCheckResponse,
      grpc::protobuf::MessageLite, grpc::protobuf::MessageLite>(
      channel.get(), method, &ctx, request, response);
}

TEST_F(ServiceTest, HealthIsServing) {
  for (const std::string service : {"", "attn.v1.AttentionService"}) {
    SCOPED_TRACE(service);
    wire::HealthCheckResponse response;
    grpc::Status s = HealthCheck(channel_, service, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.status(), wire::HealthCheckResponse::SERVING);
  }
  wire::HealthCheckResponse response;
  EXPECT_EQ(HealthCheck(channel_, "no.such.Service", &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, ReflectionListsTheService) {
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  std::unique_ptr<grpc::ClientReaderWriter<wire::ServerReflectionRequest,
                                           wire::ServerReflectionResponse>>
      stream(grpc::internal::ClientReaderWriterFactory<
             wire::ServerReflectionRequest,
             wire::ServerReflectionResponse>::Create(channel_.get(), method,
                                                     &ctx));
  wire::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->WritesDone());
  wire::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) {
    names.push_back(s.name());
  }
  EXPECT_THAT(names, ::testing::Contains("attn.v1.AttentionService"));
  EXPECT_THAT(names, ::testing::Contains("grpc.health.v1.Health"));
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServiceTest, GracefulShutdownLetsInFlightCallsFinish) {
  // A second server whose repository adds a model with a gated fake kernel:
  // a call to it holds the executor, so the demo calls behind it are
  // certainly in flight when Shutdown() begins.
  testing::KernelLog gate;
  absl::StatusOr<std::unique_ptr<ModelRepository>> demo =
      ModelRepository::CreateDemo();
  ASSERT_TRUE(demo.ok()) << demo.status();
  std::vector<std::shared_ptr<const Model>> models = (*demo)->List();
  models.push_back(testing::MakeFakeModel("gate", &gate));
  ServerOptions options;
  options.host = "127.0.0.1";
  options.threads = 1;
  absl::StatusOr<std::unique_ptr<AttentionServer>> started =
      AttentionServer::Start(options,
                             std::make_shared<ModelRepository>(models));
  ASSERT_TRUE(started.ok()) << started.status();
  AttentionServer& server = **started;
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                          grpc::InsecureChannelCredentials());
  auto stub = v1::AttentionService::NewStub(channel);

  struct Call {
    grpc::ClientContext ctx;
    v1::AttendRequest request;
    v1::AttendResponse response;
    grpc::Status status;
    absl::Notification done;
    Inputs inputs;
  };
  auto start_call = [&](Call* call) {
    SetDeadline(&call->ctx);
    stub->async()->Attend(&call->ctx, &call->request, &call->response,
                          [call](grpc::Status s) {
                            call->status = std::move(s);
                            call->done.Notify();
                          });
  };
  gate.Close();
  Call blocker;
  blocker.request.set_model("gate");
  *blocker.request.mutable_query() = testing::RandomTensor({1, 2, 8}, 1);
  start_call(&blocker);
  gate.AwaitEntered(1);  // the executor is now held

  constexpr int kCalls = 3;
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < kCalls; ++i) {
    auto call = std::make_unique<Call>();
    call->inputs = SelfAttention(1, 16, 40 + i);
    call->request = MakeRequest(&call->inputs, v1::FLOAT32);
    start_call(call.get());
    calls.push_back(std::move(call));
  }
  // Bounded wait until the server has queued them all (they cannot run).
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (server.InFlightTasks() < 1 + kCalls && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(server.InFlightTasks(), 1 + kCalls);

  std::thread stopper([&] { server.Shutdown(absl::Seconds(30)); });
  // Shutdown() first turns health NOT_SERVING (or the server stops
  // answering); only then release the executor.
  for (;;) {
    wire::HealthCheckResponse health;
    grpc::Status s = HealthCheck(channel, "", &health);
    if (!s.ok() || health.status() != wire::HealthCheckResponse::SERVING) {
      break;
    }
    ASSERT_LT(absl::Now(), give_up) << "health never left SERVING";
    absl::SleepFor(absl::Milliseconds(1));
  }
  gate.Open();
  stopper.join();

  ASSERT_TRUE(blocker.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(blocker.status.ok()) << blocker.status.error_message();
  for (auto& call : calls) {
    ASSERT_TRUE(call->done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    EXPECT_TRUE(call->status.ok()) << call->status.error_message();
    ExpectClose(Values(call->response.output()), Reference(call->inputs).output,
                v1::FLOAT32, "output");
  }
  // New calls are refused now.
  v1::AttendResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_FALSE(stub->Attend(&ctx, calls[0]->request, &response).ok());
}

}  // namespace
}  // namespace attn::server
