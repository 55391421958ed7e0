#include "server/api/inference_service.h"

#include <deque>
#include <memory>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/api/v2_infer.h"
#include "server/api/v2_mapping.h"

#ifndef ATTN_VERSION
#define ATTN_VERSION "unknown"
#endif

namespace attn::server {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;
using StreamReactor =
    grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse>;

// Answers produced but not yet written, per stream, above which the stream
// stops reading until the client catches up (bounds per-stream memory).
constexpr int64_t kMaxOutstandingPerStream = 32;

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context,
                               const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Unary ModelInfer: lives from the handler until OnDone.
class InferReactor final : public grpc::ServerUnaryReactor {
 public:
  InferReactor(AttentionServiceImpl& attention,
               grpc::CallbackServerContext* context,
               const ModelInferRequest* request, ModelInferResponse* response)
      : attention_(attention),
        cancelled_(std::make_shared<CancellationFlag>(false)) {
    const absl::Status status =
        StartV2Infer(attention, Protocol::kKserveGrpc, *request,
                     ContextDeadline(*context), cancelled_, &reservation_,
                     [this, response](absl::Status s, ModelInferResponse r) {
                       if (s.ok()) response->Swap(&r);
                       Finish(ToGrpcStatus(s));  // last use of `this`
                     });
    if (!status.ok()) Finish(ToGrpcStatus(status));
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    attention_.CallEnded();  // admitted by ModelInfer
    delete this;             // releases reservation_
  }

 private:
  AttentionServiceImpl& attention_;
  const std::shared_ptr<CancellationFlag> cancelled_;
  InflightBudget::Reservation reservation_;
};

// ModelStreamInfer: reads requests one at a time, starts each, and writes
// the answers in completion order with at most one write outstanding.
// Drain (as AttendStream): stops reading, answers what was read, then ends
// OK if the client had half-closed, else UNAVAILABLE.
//
// Lifetime: Finish() is called exactly once, only when reads are done (or
// draining), no request is still being computed and no write is
// outstanding; OnDone then deletes the reactor.
class StreamInferReactor final : public StreamReactor,
                                 public AttentionServiceImpl::DrainableStream {
 public:
  StreamInferReactor(AttentionServiceImpl* attention,
                     grpc::CallbackServerContext* context)
      : attention_(*attention),
        context_(context),
        cancelled_(std::make_shared<CancellationFlag>(false)) {
    StartRead(&request_);
  }

  void Drain() override {
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
    }
    Advance();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // client half-closed, or the call is broken
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        if (!draining_) client_half_closed_ = true;
      }
      Advance();
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      // Finished while this read was in flight (drain): never processed,
      // never answered; the client resends it.
      if (finished_) return;
      ++in_flight_;
      ++unwritten_;
    }
    auto reservation = std::make_shared<InflightBudget::Reservation>();
    const std::string id = request_.id();
    const absl::Status status = StartV2Infer(
        attention_, Protocol::kKserveGrpc, request_, ContextDeadline(*context_),
        cancelled_, reservation.get(),
        [this, reservation, id](absl::Status s, ModelInferResponse r) {
          ModelStreamInferResponse answer;
          if (s.ok()) {
            answer.mutable_infer_response()->Swap(&r);
          } else {
            SetError(s, id, &answer);
          }
          Complete(std::move(answer));
        });
    if (!status.ok()) {
      ModelStreamInferResponse answer;
      SetError(status, id, &answer);
      Complete(std::move(answer));
    }
    bool read_more;
    {
      absl::MutexLock lock(&mu_);
      read_more = !draining_ && unwritten_ < kMaxOutstandingPerStream;
      read_paused_ = !read_more && !draining_;
    }
    // Last use of `this` on this path: nothing can finish the stream while a
    // read is outstanding or paused (reads_done_ is false) unless draining.
    if (read_more) {
      StartRead(&request_);
    } else {
      Advance();  // draining: may be the last answer
    }
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      --unwritten_;
      if (!ok) {
        write_failed_ = true;
        unwritten_ -= static_cast<int64_t>(pending_.size());
        pending_.clear();
      }
    }
    Advance();
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    attention_.CallEnded(this);  // admitted by ModelStreamInfer
    delete this;
  }

 private:
  static void SetError(const absl::Status& status, const std::string& id,
                       ModelStreamInferResponse* answer) {
    // Triton's convention: the message, and the id in the (empty) response.
    answer->set_error_message(
        std::string(absl::StatusCodeToString(status.code())) + ": " +
        std::string(status.message()));
    answer->mutable_infer_response()->set_id(id);
  }

  // Records one answer (from any thread).
  void Complete(ModelStreamInferResponse answer) {
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (write_failed_) {
        --unwritten_;
      } else {
        pending_.push_back(std::move(answer));
      }
    }
    Advance();
  }

  // Starts the next write, resumes reading, or finishes: whichever applies.
  // Decisions are taken under mu_; gRPC is called outside it.
  void Advance() {
    const ModelStreamInferResponse* to_write = nullptr;
    bool start_read = false;
    bool finish = false;
    bool clean = true;
    bool drained = false;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (!writing_ && !write_failed_ && !pending_.empty()) {
        current_ = std::move(pending_.front());
        pending_.pop_front();
        writing_ = true;
        to_write = &current_;
      }
      if (read_paused_ && !reads_done_ && !draining_ &&
          (write_failed_ || unwritten_ < kMaxOutstandingPerStream)) {
        read_paused_ = false;
        start_read = true;
      }
      // Draining: a read may still be outstanding (the client sends
      // nothing); finishing completes it with ok=false.
      const bool reads_over = reads_done_ || draining_;
      if (!writing_ && !start_read && (!read_paused_ || draining_) &&
          reads_over && in_flight_ == 0 && pending_.empty()) {
        finished_ = true;
        finish = true;
        clean = !write_failed_ && !cancelled_->load();
        drained = clean && !client_half_closed_;
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (start_read) StartRead(&request_);
    if (finish) Finish(StreamEndStatus(drained, clean));
  }

  AttentionServiceImpl& attention_;
  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<CancellationFlag> cancelled_;
  // Written by gRPC between StartRead and OnReadDone only.
  ModelInferRequest request_;

  absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // read, not yet answered
  int64_t unwritten_ ABSL_GUARDED_BY(mu_) = 0;  // read, answer not written
  std::deque<ModelStreamInferResponse> pending_ ABSL_GUARDED_BY(mu_);
  ModelStreamInferResponse current_;  // being written (writing_ is true)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool client_half_closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> FindV2Model(
    const ModelRepository& repository, const std::string& name,
    const std::string& version) {
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "model name is empty; name a served model (GET /v2/models/<name> or "
        "attn_cli models list them)");
  }
  absl::StatusOr<int64_t> v = ParseModelVersion(version);
  if (!v.ok()) return v.status();
  return repository.Get(name, *v);
}

InferenceServiceImpl::InferenceServiceImpl(AttentionServiceImpl* attention)
    : attention_(attention) {}

bool InferenceServiceImpl::ready() const {
  const HealthStatus* health = health_.load();
  return ready_.load() && (health == nullptr || health->ServerReady());
}

bool InferenceServiceImpl::model_ready(const std::string& model) const {
  const HealthStatus* health = health_.load();
  return ready_.load() && (health == nullptr || health->ModelReady(model));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerLive(
    grpc::CallbackServerContext* context, const inference::ServerLiveRequest*,
    inference::ServerLiveResponse* response) {
  response->set_live(true);
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerReady(
    grpc::CallbackServerContext* context, const inference::ServerReadyRequest*,
    inference::ServerReadyResponse* response) {
  response->set_ready(ready());
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelReady(
    grpc::CallbackServerContext* context,
    const inference::ModelReadyRequest* request,
    inference::ModelReadyResponse* response) {
  absl::StatusOr<std::shared_ptr<const Model>> model = FindV2Model(
      attention_->repository(), request->name(), request->version());
  if (model.ok()) response->set_ready(model_ready(request->name()));
  return Done(context, model.status());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ServerMetadata(
    grpc::CallbackServerContext* context,
    const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(kV2ServerName);
  response->set_version(ATTN_VERSION);
  for (const char* e : kV2Extensions) response->add_extensions(e);
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelMetadata(
    grpc::CallbackServerContext* context,
    const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  absl::StatusOr<std::shared_ptr<const Model>> model = FindV2Model(
      attention_->repository(), request->name(), request->version());
  if (model.ok()) {
    FillModelMetadata(**model, attention_->repository(), response);
  }
  return Done(context, model.status());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelConfig(
    grpc::CallbackServerContext* context,
    const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  absl::StatusOr<std::shared_ptr<const Model>> model = FindV2Model(
      attention_->repository(), request->name(), request->version());
  if (model.ok()) FillModelConfig(**model, response->mutable_config());
  return Done(context, model.status());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ModelInfer(
    grpc::CallbackServerContext* context, const ModelInferRequest* request,
    ModelInferResponse* response) {
  // Parked (drain) or rejected on the context's default reactor.
  if (!attention_->AdmitUnary(context)) return context->DefaultReactor();
  return new InferReactor(*attention_, context, request, response);
}

StreamReactor* InferenceServiceImpl::ModelStreamInfer(
    grpc::CallbackServerContext* context) {
  return attention_->AdmitStream<ModelInferRequest, ModelStreamInferResponse>(
      [this, context] { return new StreamInferReactor(attention_, context); });
}

}  // namespace attn::server
