#include "server/api/attention_service.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "server/api/session_requests.h"
#include "server/api/tensor_codec.h"

namespace attn::server {
namespace {

using StreamReactor =
    grpc::ServerBidiReactor<v1::AttendRequest, v1::AttendStreamResponse>;

// Responses produced but not yet written, per stream, above which the stream
// stops reading until the client catches up (bounds per-stream memory).
constexpr int64_t kMaxOutstandingPerStream = 32;

// Unary Attend: lives from the handler until OnDone.
class AttendReactor final : public grpc::ServerUnaryReactor {
 public:
  AttendReactor(AttentionServiceImpl* service,
                grpc::CallbackServerContext* context,
                const v1::AttendRequest* request, v1::AttendResponse* response)
      : service_(service),
        cancelled_(std::make_shared<CancellationFlag>(false)),
        metrics_(service->StartRequestMetrics(*request)) {
    BatchTask task;
    AttentionServiceImpl::ResponseSpec spec;
    absl::Status status =
        service->Prepare(*context, *request, &task, &spec, &reservation_);
    if (status.ok()) {
      task.cancelled = cancelled_;
      task.done = [this, response, spec = std::move(spec)](
                      absl::Status s, AttentionResult result) {
        if (s.ok()) {
          AttentionServiceImpl::FillResponse(spec, std::move(result), response);
        }
        metrics_.Finish(s.code(), /*reached_executor=*/true);
        Finish(ToGrpcStatus(s));  // last use of `this`
      };
      status = service->batcher()->Submit(std::move(task));
      if (status.ok()) return;  // `done` owns the reactor from here on
    }
    metrics_.Finish(status.code(), /*reached_executor=*/false);
    Finish(ToGrpcStatus(status));
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    service_->CallEnded();
    delete this;  // releases reservation_
  }

 private:
  AttentionServiceImpl* const service_;
  const std::shared_ptr<CancellationFlag> cancelled_;
  RequestMetrics metrics_;
  // The request's bytes in the in-flight budget, held until the answer has
  // been sent (OnDone).
  InflightBudget::Reservation reservation_;
};

// AttendStream: reads requests one at a time, submits each, and writes the
// answers strictly in arrival order with at most one write outstanding.
//
// Lifetime: Finish() is called exactly once, only when reads are done, no
// request is still being computed (so no executor callback can touch this
// object any more) and no write is outstanding; OnDone then deletes it.
class AttendStreamReactor final : public StreamReactor,
                                  public AttentionServiceImpl::DrainableStream {
 public:
  AttendStreamReactor(AttentionServiceImpl* service,
                      grpc::CallbackServerContext* context)
      : service_(service),
        context_(context),
        cancelled_(std::make_shared<CancellationFlag>(false)) {
    StartRead(&request_);
  }

  // Stops reading: the requests already read are answered, then the stream
  // ends (OK if the client had half-closed, else UNAVAILABLE).
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
        read_outstanding_ = false;
        if (!draining_) client_half_closed_ = true;
      }
      Advance();
      return;
    }
    int64_t seq;
    {
      absl::MutexLock lock(&mu_);
      read_outstanding_ = false;
      // Finished while this read was in flight (drain): the request was
      // never processed and gets no answer; the client resends it.
      if (finished_) return;
      seq = next_seq_++;
      ++in_flight_;
    }
    RequestMetrics metrics = service_->StartRequestMetrics(request_);
    BatchTask task;
    AttentionServiceImpl::ResponseSpec spec;
    InflightBudget::Reservation reservation;
    absl::Status status =
        service_->Prepare(*context_, request_, &task, &spec, &reservation);
    if (status.ok()) {
      task.cancelled = cancelled_;
      // The reservation lives as long as the task (its decoded tensors) and
      // its answer being built; the written answers waiting in pending_ are
      // bounded by kMaxOutstandingPerStream.
      auto held =
          std::make_shared<InflightBudget::Reservation>(std::move(reservation));
      task.done = [this, seq, spec = std::move(spec), metrics, held](
                      absl::Status s, AttentionResult result) mutable {
        metrics.Finish(s.code(), /*reached_executor=*/true);
        v1::AttendStreamResponse response;
        if (s.ok()) {
          AttentionServiceImpl::FillResponse(spec, std::move(result),
                                             response.mutable_response());
          response.set_request_id(spec.request_id);
        } else {
          SetError(s, spec.request_id, &response);
        }
        Complete(seq, std::move(response));
      };
      status = service_->batcher()->Submit(std::move(task));
    }
    if (!status.ok()) {
      metrics.Finish(status.code(), /*reached_executor=*/false);
      v1::AttendStreamResponse response;
      SetError(status, request_.request_id(), &response);
      Complete(seq, std::move(response));
    }
    bool read_more;
    {
      absl::MutexLock lock(&mu_);
      read_more =
          !draining_ && next_seq_ - next_write_ < kMaxOutstandingPerStream;
      read_paused_ = !read_more && !draining_;
      read_outstanding_ = read_more;
    }
    // Last use of `this` on this path: nothing can finish the stream while a
    // read is outstanding or paused (reads_done_ is false).
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
      if (ok) {
        ++next_write_;
      } else {
        write_failed_ = true;
        pending_.clear();
      }
    }
    Advance();
  }

  void OnCancel() override { cancelled_->store(true); }
  void OnDone() override {
    service_->CallEnded(this);
    delete this;
  }

 private:
  static void SetError(const absl::Status& status, const std::string& id,
                       v1::AttendStreamResponse* response) {
    response->mutable_error()->set_code(static_cast<int32_t>(status.code()));
    response->mutable_error()->set_message(std::string(status.message()));
    response->set_request_id(id);
  }

  // Records the answer to request `seq` (from any thread).
  void Complete(int64_t seq, v1::AttendStreamResponse response) {
    {
      absl::MutexLock lock(&mu_);
      --in_flight_;
      if (!write_failed_) pending_.emplace(seq, std::move(response));
    }
    Advance();
  }

  // Starts the next write, resumes reading, or finishes: whichever applies.
  // Decisions are taken under mu_; gRPC is called outside it.
  void Advance() {
    const v1::AttendStreamResponse* to_write = nullptr;
    bool start_read = false;
    bool finish = false;
    bool clean = true;
    bool drained = false;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (!writing_ && !write_failed_) {
        auto it = pending_.find(next_write_);
        if (it != pending_.end()) {
          current_ = std::move(it->second);
          pending_.erase(it);
          writing_ = true;
          to_write = &current_;
        }
      }
      if (read_paused_ && !reads_done_ && !draining_ &&
          (write_failed_ ||
           next_seq_ - next_write_ < kMaxOutstandingPerStream)) {
        read_paused_ = false;
        start_read = true;
      }
      // Draining: a read may still be outstanding (the client sends
      // nothing); finishing completes it with ok=false.
      const bool reads_over = reads_done_ || draining_;
      if (!writing_ && !start_read && (!read_paused_ || draining_) &&
          reads_over && in_flight_ == 0 &&
          (write_failed_ || pending_.empty())) {
        finished_ = true;
        finish = true;
        clean = !write_failed_ && !cancelled_->load();
        drained = clean && !client_half_closed_;
      }
    }
    if (to_write != nullptr) StartWrite(to_write);
    if (start_read) {
      {
        absl::MutexLock lock(&mu_);
        read_outstanding_ = true;
      }
      StartRead(&request_);
    }
    if (finish) Finish(StreamEndStatus(drained, clean));
  }

  AttentionServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<CancellationFlag> cancelled_;
  // Written by gRPC between StartRead and OnReadDone only.
  v1::AttendRequest request_;

  absl::Mutex mu_;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;    // requests read
  int64_t next_write_ ABSL_GUARDED_BY(mu_) = 0;  // responses written
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;   // read, not yet answered
  std::map<int64_t, v1::AttendStreamResponse> pending_ ABSL_GUARDED_BY(mu_);
  v1::AttendStreamResponse current_;  // being written (writing_ is true)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool client_half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool read_outstanding_ ABSL_GUARDED_BY(mu_) = true;
};

}  // namespace

absl::Time ContextDeadline(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

void FillModelInfo(const Model& model, v1::ModelInfo* info) {
  info->set_name(model.name);
  info->set_version(model.version);
  info->set_d_model(model.attention.d_model);
  info->set_num_heads(model.attention.num_heads);
  info->set_num_kv_heads(model.attention.num_kv_heads);
  info->set_head_dim(model.attention.head_dim);
  info->set_compute_dtype(model.config.compute_dtype);
  info->set_causal(model.config.causal);
  info->set_scale(model.attention.scale);
  info->set_max_sequence_length(model.config.max_sequence_length);
  info->add_input_dtypes(v1::FLOAT32);
  info->add_input_dtypes(v1::BFLOAT16);
  info->add_input_dtypes(v1::FLOAT16);
  info->set_source(model.source);
  if (model.kernel != nullptr) {
    info->set_implementation(model.kernel->ImplementationSummary());
  }
}

AttentionServiceImpl::AttentionServiceImpl(
    std::shared_ptr<const ModelRepository> repository, Batcher* batcher,
    const ValidationLimits& limits, ServerMetrics* metrics,
    InflightBudget* budget)
    : repository_(std::move(repository)),
      batcher_(batcher),
      limits_(limits),
      metrics_(metrics),
      budget_(budget) {}

RequestMetrics AttentionServiceImpl::StartRequestMetrics(
    const v1::AttendRequest& request, Protocol protocol) const {
  if (metrics_ == nullptr) return RequestMetrics();
  RequestMetrics metrics = metrics_->StartRequest();
  metrics.SetModel(request.model());
  metrics.SetProtocol(protocol);
  return metrics;
}

absl::Status AttentionServiceImpl::Prepare(
    const grpc::CallbackServerContext& context,
    const v1::AttendRequest& request, BatchTask* task, ResponseSpec* spec,
    InflightBudget::Reservation* reservation) const {
  return PrepareImpl(ContextDeadline(context), &context, request, task, spec,
                     reservation);
}

absl::Status AttentionServiceImpl::Prepare(
    absl::Time deadline, const v1::AttendRequest& request, BatchTask* task,
    ResponseSpec* spec, InflightBudget::Reservation* reservation) const {
  return PrepareImpl(deadline, nullptr, request, task, spec, reservation);
}

absl::Status AttentionServiceImpl::PrepareImpl(
    absl::Time deadline, const grpc::CallbackServerContext* context,
    const v1::AttendRequest& request, BatchTask* task, ResponseSpec* spec,
    InflightBudget::Reservation* reservation) const {
  if (request.model().empty()) {
    return absl::InvalidArgumentError(
        "model is empty; set AttendRequest.model (ListModels shows the "
        "served models)");
  }
  if (request.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version is ", request.version(),
                     "; use 0 for the newest version or a positive number"));
  }
  const bool session = IsSessionRequest(request);
  if (session && context == nullptr) {
    return absl::InvalidArgumentError(
        "sessions are an attn.v1.AttentionService feature; KServe v2 "
        "requests are stateless");
  }
  absl::StatusOr<std::shared_ptr<const Model>> model =
      context != nullptr ? ResolveModel(*context, request)
                         : repository_->Get(request.model(), request.version());
  if (!model.ok()) return model.status();
  if (budget_ != nullptr) {
    absl::StatusOr<InflightBudget::Reservation> r =
        budget_->Reserve(EstimateRequestMemory(
            request, (*model)->attention.num_heads, limits_.max_message_bytes));
    if (!r.ok()) return r.status();
    *reservation = *std::move(r);
  }
  if (session) ATTN_RETURN_IF_ERROR(CheckSessionRequest(request));
  absl::StatusOr<ValidatedRequest> validated =
      ValidateAttendRequest(request, *model, limits_);
  if (!validated.ok()) return validated.status();

  const Model& m = **model;
  spec->dtype = validated->output_dtype;
  spec->has_batch_dim = validated->output_has_batch_dim;
  spec->batch = validated->job.batch;
  spec->q_len = validated->job.q_len;
  spec->kv_len = validated->job.kv_len;
  spec->d_model = m.attention.d_model;
  spec->num_heads = m.attention.num_heads;
  spec->model = m.name;
  spec->version = m.version;
  spec->request_id = request.request_id();

  spec->session = session;

  task->job = std::move(validated->job);
  task->deadline = deadline;
  if (session) return BeginSessionStep(*context, request, *model, task);
  return absl::OkStatus();
}

void AttentionServiceImpl::FillResponse(const ResponseSpec& spec,
                                        AttentionResult result,
                                        v1::AttendResponse* response) {
  if (spec.has_batch_dim) {
    EncodeFloatTensor(result.output.data(),
                      {spec.batch, spec.q_len, spec.d_model}, spec.dtype,
                      response->mutable_output());
  } else {
    EncodeFloatTensor(result.output.data(), {spec.q_len, spec.d_model},
                      spec.dtype, response->mutable_output());
  }
  if (!result.weights.empty()) {
    EncodeFloatTensor(result.weights.data(),
                      {spec.batch, spec.num_heads, spec.q_len, spec.kv_len},
                      spec.dtype, response->mutable_attention_weights());
  }
  response->set_model(spec.model);
  response->set_version(spec.version);
  response->set_request_id(spec.request_id);
  if (spec.session) response->set_session_length(result.session_length);
  v1::Timing* timing = response->mutable_timing();
  timing->set_queue_us(result.timing.queue_us);
  timing->set_compute_us(result.timing.compute_us);
  timing->set_batch_requests(result.timing.batch_requests);
}

bool AttentionServiceImpl::AdmitUnary(grpc::CallbackServerContext* context) {
  absl::MutexLock lock(&drain_mu_);
  if (!stopping_) {
    ++accepted_running_;
    return true;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const grpc::Status unavailable(grpc::StatusCode::UNAVAILABLE,
                                 kDrainingMessage);
  if (rejecting_) {
    reactor->Finish(unavailable);
  } else {
    ++parked_total_;
    last_park_ = absl::Now();
    parked_.push_back([reactor, unavailable] { reactor->Finish(unavailable); });
  }
  return false;
}

void AttentionServiceImpl::CallEnded(DrainableStream* stream) {
  absl::MutexLock lock(&drain_mu_);
  if (stream != nullptr) streams_.erase(stream);
  --accepted_running_;
  drain_cv_.SignalAll();
}

void AttentionServiceImpl::StopAccepting() {
  absl::MutexLock lock(&drain_mu_);
  if (stopping_) return;
  stopping_ = true;
  last_park_ = absl::Now();
  // Under drain_mu_: a stream removes itself (OnDone) under it too, so none
  // is deleted while it is told to drain.
  for (DrainableStream* stream : streams_) stream->Drain();
}

int64_t AttentionServiceImpl::WaitForAcceptedCalls(absl::Time deadline,
                                                   absl::Duration quiet) {
  absl::MutexLock lock(&drain_mu_);
  while (true) {
    const absl::Time now = absl::Now();
    if (accepted_running_ == 0 && now >= last_park_ + quiet) return 0;
    if (now >= deadline) return accepted_running_;
    drain_cv_.WaitWithDeadline(
        &drain_mu_, std::min(deadline, std::max(now, last_park_ + quiet) +
                                           absl::Milliseconds(5)));
  }
}

void AttentionServiceImpl::RejectParked() {
  std::vector<std::function<void()>> parked;
  {
    absl::MutexLock lock(&drain_mu_);
    stopping_ = true;
    rejecting_ = true;
    parked.swap(parked_);
  }
  for (auto& reject : parked) reject();
}

int64_t AttentionServiceImpl::ParkedCalls() const {
  absl::MutexLock lock(&drain_mu_);
  return parked_total_;
}

grpc::ServerUnaryReactor* AttentionServiceImpl::Attend(
    grpc::CallbackServerContext* context, const v1::AttendRequest* request,
    v1::AttendResponse* response) {
  if (!AdmitUnary(context)) return context->DefaultReactor();
  return new AttendReactor(this, context, request, response);
}

grpc::Status StreamEndStatus(bool drained, bool clean) {
  if (drained) {
    return grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        "server is draining: every request answered on this stream was "
        "processed, the others were not read; resend them on a new stream");
  }
  return clean ? grpc::Status::OK
               : grpc::Status(grpc::StatusCode::CANCELLED,
                              "stream cancelled or broken");
}

StreamReactor* AttentionServiceImpl::AttendStream(
    grpc::CallbackServerContext* context) {
  return AdmitStream<v1::AttendRequest, v1::AttendStreamResponse>(
      [this, context] { return new AttendStreamReactor(this, context); });
}

grpc::ServerUnaryReactor* AttentionServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const v1::ListModelsRequest* request,
    v1::ListModelsResponse* response) {
  if (!AdmitUnary(context)) return context->DefaultReactor();
  for (const std::shared_ptr<const Model>& model : repository_->List()) {
    FillModelInfo(*model, response->add_models());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  CallEnded();
  return reactor;
}

grpc::ServerUnaryReactor* AttentionServiceImpl::GetModel(
    grpc::CallbackServerContext* context, const v1::GetModelRequest* request,
    v1::ModelInfo* response) {
  if (!AdmitUnary(context)) return context->DefaultReactor();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status;
  if (request->model().empty()) {
    status = absl::InvalidArgumentError(
        "model is empty; set GetModelRequest.model (ListModels shows the "
        "served models)");
  } else if (request->version() < 0) {
    status = absl::InvalidArgumentError(
        absl::StrCat("version is ", request->version(),
                     "; use 0 for the newest version or a positive number"));
  } else {
    absl::StatusOr<std::shared_ptr<const Model>> model =
        repository_->Get(request->model(), request->version());
    status = model.status();
    if (model.ok()) FillModelInfo(**model, response);
  }
  reactor->Finish(ToGrpcStatus(status));
  CallEnded();
  return reactor;
}

}  // namespace attn::server
