// The gRPC AttentionService (callback API): thin handlers that validate a
// request, hand it to the Batcher and answer from its completion callback.
//
//   Batcher batcher(Batcher::Options{.threads = 4});
//   AttentionServiceImpl service(repository, &batcher, ValidationLimits{});
//   grpc::ServerBuilder builder;
//   builder.RegisterService(&service);
//
// Compute never runs on a gRPC thread: Attend validates (decodes the tensors)
// on the gRPC thread, submits, and returns; the executor thread fills the
// response and calls Finish. AttendStream answers each request in order, with
// its request_id; a failing request yields a response whose `error` is set,
// and the stream goes on until the client half-closes.
//
// Drain (see docs/ARCHITECTURE.md, "Drain"): StopAccepting() parks every
// call that arrives afterwards (it is held, not answered) and tells open
// AttendStream streams to stop reading: each finishes the requests already
// read, then ends with OK if the client had half-closed, else UNAVAILABLE
// "server is draining" (the requests without a response were never read:
// resend them on a new stream). RejectParked() answers the parked calls
// UNAVAILABLE and every later call at once. Parking keeps closed-loop
// clients waiting while grpc::Server::Shutdown() sends its GOAWAY, so that
// they open no new stream on a connection gRPC would cancel it on.
//
// Thread-safety: all methods may be called concurrently by gRPC and by the
// server's shutdown thread; per-call state lives in reactors.
#ifndef ATTNSERVE_SERVER_API_ATTENTION_SERVICE_H_
#define ATTNSERVE_SERVER_API_ATTENTION_SERVICE_H_

#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attn/v1/attention.grpc.pb.h"
#include "attn/v1/attention.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/api/request_validation.h"
#include "server/models/model_repository.h"
#include "server/observability/metrics.h"
#include "server/serving/batcher.h"
#include "server/serving/inflight_budget.h"
#include "server/serving/session_table.h"

namespace attn::server {

// The one place absl::Status becomes grpc::Status (the code numbers are the
// same, so it is a cast).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The call's deadline (absl::InfiniteFuture() when it has none).
absl::Time ContextDeadline(const grpc::CallbackServerContext& context);

// Fills `info` from `model` (ListModels / GetModel).
void FillModelInfo(const Model& model, v1::ModelInfo* info);

class AttentionServiceImpl final
    : public v1::AttentionService::CallbackService {
 public:
  // `repository` is shared; `batcher` is not owned and must outlive every
  // call (stop the grpc::Server before the Batcher). `metrics` (optional,
  // not owned, must outlive every call) counts each Attend request, unary
  // or streamed, and its latency. `budget` (optional, not owned, must
  // outlive every call) bounds the bytes all requests in flight hold.
  // REQUIRES: repository != nullptr, batcher != nullptr.
  AttentionServiceImpl(std::shared_ptr<const ModelRepository> repository,
                       Batcher* batcher, const ValidationLimits& limits,
                       ServerMetrics* metrics = nullptr,
                       InflightBudget* budget = nullptr);

  grpc::ServerUnaryReactor* Attend(grpc::CallbackServerContext* context,
                                   const v1::AttendRequest* request,
                                   v1::AttendResponse* response) override;

  grpc::ServerBidiReactor<v1::AttendRequest, v1::AttendStreamResponse>*
  AttendStream(grpc::CallbackServerContext* context) override;

  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* context,
      const v1::ListModelsRequest* request,
      v1::ListModelsResponse* response) override;

  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::ModelInfo* response) override;

  // Sessions (server/api/session_requests.cc). Without EnableSessions, a
  // session step or EndSession is FAILED_PRECONDITION.
  grpc::ServerUnaryReactor* EndSession(
      grpc::CallbackServerContext* context,
      const v1::EndSessionRequest* request,
      v1::EndSessionResponse* response) override;
  // `sessions` is not owned and must outlive every call; with
  // `scope_by_token` session ids are scoped by the caller's bearer token.
  // Call before the server starts.
  void EnableSessions(SessionTable* sessions, bool scope_by_token);

  // Drain, step 1: from now on new calls are parked and open streams wind
  // down. Idempotent.
  void StopAccepting();
  // Drain, step 2: blocks until no call accepted before StopAccepting() is
  // still running and no call was parked for `quiet`, or until `deadline`.
  // Returns the number of accepted calls still running (0 = drained).
  int64_t WaitForAcceptedCalls(absl::Time deadline, absl::Duration quiet);
  // Drain, step 3: answers every parked call, and every later one at once,
  // with UNAVAILABLE. Idempotent.
  void RejectParked();
  // Calls parked so far (for logs and tests).
  int64_t ParkedCalls() const;

  // Implementation details follow. API users need not read.

  // Open AttendStream reactors (so that StopAccepting can reach them).
  class DrainableStream {
   public:
    virtual ~DrainableStream() = default;
    virtual void Drain() = 0;
  };
  // Called by a reactor's OnDone: an accepted call ended.
  void CallEnded(DrainableStream* stream = nullptr);
  // For a unary call: true if it is accepted (counted until CallEnded());
  // false if it was parked or rejected on `context`'s default reactor.
  bool AdmitUnary(grpc::CallbackServerContext* context);
  // For a bidi stream (AttendStream, KServe's ModelStreamInfer): if the call
  // is accepted, the reactor `make()` returns (a Reactor that is also a
  // DrainableStream: counted until CallEnded(it), told to Drain() by
  // StopAccepting); otherwise a reactor that is parked, then finished
  // UNAVAILABLE by RejectParked().
  template <typename Request, typename Response, typename Make>
  grpc::ServerBidiReactor<Request, Response>* AdmitStream(Make make);

  // How to turn an AttentionResult into an AttendResponse.
  struct ResponseSpec {
    v1::DataType dtype = v1::FLOAT32;
    bool has_batch_dim = true;
    int64_t batch = 1;
    int64_t q_len = 0;
    int64_t kv_len = 0;
    int64_t d_model = 0;
    int64_t num_heads = 0;
    std::string model;
    int64_t version = 0;
    std::string request_id;
    bool session = false;  // a session step: set session_length
  };

  // Resolves the model, takes the request's memory from the in-flight
  // budget into `reservation` (before anything is decoded), validates
  // `request` into `task` (all but `done` and `cancelled`) and `spec`. The
  // caller holds `reservation` until the answer is sent.
  // Errors: INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED (budget full).
  absl::Status Prepare(const grpc::CallbackServerContext& context,
                       const v1::AttendRequest& request, BatchTask* task,
                       ResponseSpec* spec,
                       InflightBudget::Reservation* reservation) const;
  // The same, with the deadline given directly (the KServe v2 services:
  // gRPC and HTTP share this path, so v2 and attn.v1 requests share
  // validation, budget and batches).
  absl::Status Prepare(absl::Time deadline, const v1::AttendRequest& request,
                       BatchTask* task, ResponseSpec* spec,
                       InflightBudget::Reservation* reservation) const;

  // Encodes `result` into `response` per `spec`.
  static void FillResponse(const ResponseSpec& spec, AttentionResult result,
                           v1::AttendResponse* response);

  // Both Prepare()s: `context` is null for KServe v2 requests (no
  // sessions: their requests carry none).
  absl::Status PrepareImpl(absl::Time deadline,
                           const grpc::CallbackServerContext* context,
                           const v1::AttendRequest& request, BatchTask* task,
                           ResponseSpec* spec,
                           InflightBudget::Reservation* reservation) const;
  // The model a request runs on: a continuing session step's pinned
  // version, else the repository's answer (NOT_FOUND for unknown ones).
  absl::StatusOr<std::shared_ptr<const Model>> ResolveModel(
      const grpc::CallbackServerContext& context,
      const v1::AttendRequest& request) const;
  // Admits the session step `request` (validated into task->job) in the
  // session table; sets task->step. Errors: as SessionTable::BeginStep.
  absl::Status BeginSessionStep(const grpc::CallbackServerContext& context,
                                const v1::AttendRequest& request,
                                const std::shared_ptr<const Model>& model,
                                BatchTask* task) const;

  Batcher* batcher() const { return batcher_; }

  // Starts the metrics of one Attend request (records nothing when metrics
  // are off).
  RequestMetrics StartRequestMetrics(
      const v1::AttendRequest& request,
      Protocol protocol = Protocol::kAttnV1) const;

  // The served models (shared, immutable).
  const ModelRepository& repository() const { return *repository_; }

 private:
  const std::shared_ptr<const ModelRepository> repository_;
  Batcher* const batcher_;
  const ValidationLimits limits_;
  ServerMetrics* const metrics_;      // may be null
  InflightBudget* const budget_;      // may be null (no budget)
  SessionTable* sessions_ = nullptr;  // null: sessions off
  bool scope_by_token_ = false;

  mutable absl::Mutex drain_mu_;
  absl::CondVar drain_cv_;
  bool stopping_ ABSL_GUARDED_BY(drain_mu_) = false;
  bool rejecting_ ABSL_GUARDED_BY(drain_mu_) = false;
  int64_t accepted_running_ ABSL_GUARDED_BY(drain_mu_) = 0;
  int64_t parked_total_ ABSL_GUARDED_BY(drain_mu_) = 0;
  absl::Time last_park_ ABSL_GUARDED_BY(drain_mu_) = absl::InfinitePast();
  std::vector<std::function<void()>> parked_ ABSL_GUARDED_BY(drain_mu_);
  std::set<DrainableStream*> streams_ ABSL_GUARDED_BY(drain_mu_);
};

// The status of a call that arrived after StopAccepting().
inline constexpr char kDrainingMessage[] =
    "server is shutting down; retry on another replica (the request was "
    "not processed)";

// How a stream whose reads are over ends: UNAVAILABLE "server is draining"
// when a drain stopped its reads (`drained`: the client had not
// half-closed), else OK, or CANCELLED if it was cancelled or broken
// (`clean` false).
grpc::Status StreamEndStatus(bool drained, bool clean);

namespace internal {
// A stream that arrived after StopAccepting(): held until RejectParked().
template <typename Request, typename Response>
class ParkedBidiReactor final
    : public grpc::ServerBidiReactor<Request, Response> {
 public:
  void Reject() {
    this->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, kDrainingMessage));
  }
  void OnDone() override { delete this; }
};
}  // namespace internal

template <typename Request, typename Response, typename Make>
grpc::ServerBidiReactor<Request, Response>* AttentionServiceImpl::AdmitStream(
    Make make) {
  absl::MutexLock lock(&drain_mu_);
  if (!stopping_) {
    ++accepted_running_;
    auto* stream = make();
    streams_.insert(stream);
    return stream;
  }
  auto* parked = new internal::ParkedBidiReactor<Request, Response>();
  if (rejecting_) {
    parked->Reject();
  } else {
    ++parked_total_;
    last_park_ = absl::Now();
    parked_.push_back([parked] { parked->Reject(); });
  }
  return parked;
}

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_ATTENTION_SERVICE_H_
