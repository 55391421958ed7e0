// StreamSlot: one AttendStream kept open for the whole load step, carrying
// one request at a time (a ClientBidiReactor).
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "client/loadgen/slot.h"

namespace attn::loadgen {
namespace {

class StreamSlot final
    : public Slot,
      public grpc::ClientBidiReactor<v1::AttendRequest,
                                     v1::AttendStreamResponse> {
 public:
  StreamSlot(v1::AttentionService::Stub* stub, SlotListener* listener)
      : listener_(listener) {
    stub->async()->AttendStream(&context_, this);
    StartRead(&response_);
    StartCall();
  }

  void Send(const v1::AttendRequest* request) override {
    bool dead = false;
    grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE;
    {
      absl::MutexLock l(&mu_);
      if (finished_) {
        dead = true;
        if (!final_status_.ok()) code = final_status_.error_code();
      } else {
        outstanding_ = true;
        if (write_pending_) {
          queued_ = request;  // sent by OnWriteDone
        } else {
          write_pending_ = true;
          StartWrite(request);
        }
      }
    }
    if (dead) {
      CallOutcome o;
      o.code = code;
      listener_->OnComplete(this, o);
    }
  }

  bool Alive() const override {
    absl::MutexLock l(&mu_);
    return !finished_;
  }

  void Cancel() override { context_.TryCancel(); }

  void Shutdown() override {
    absl::MutexLock l(&mu_);
    if (shutdown_ || finished_) return;
    shutdown_ = true;
    if (!write_pending_) StartWritesDone();
  }

  bool WaitDone(absl::Time deadline) override {
    absl::MutexLock l(&mu_);
    return mu_.AwaitWithDeadline(absl::Condition(&done_), deadline);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu_);
    write_pending_ = false;
    if (ok && queued_ != nullptr) {
      write_pending_ = true;
      StartWrite(queued_);
      queued_ = nullptr;
      return;
    }
    queued_ = nullptr;
    if (ok && shutdown_) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended: OnDone follows
    CallOutcome o;
    if (response_.has_error() && response_.error().code() != 0) {
      const int code = response_.error().code();
      o.code = code > 0 && code < kNumStatusCodes
                   ? static_cast<grpc::StatusCode>(code)
                   : grpc::StatusCode::UNKNOWN;
    } else {
      const v1::Timing& t = response_.response().timing();
      o.queue_us = t.queue_us();
      o.compute_us = t.compute_us();
      o.batch_requests = t.batch_requests();
    }
    {
      absl::MutexLock l(&mu_);
      outstanding_ = false;
    }
    StartRead(&response_);
    listener_->OnComplete(this, o);  // may Send the next request
  }

  void OnDone(const grpc::Status& status) override {
    bool outstanding;
    {
      absl::MutexLock l(&mu_);
      outstanding = outstanding_;
      outstanding_ = false;
      final_status_ = status;
      finished_ = true;  // from now on Send() fails fast
    }
    if (outstanding) {
      CallOutcome o;
      o.code =
          status.ok() ? grpc::StatusCode::UNAVAILABLE : status.error_code();
      listener_->OnComplete(this, o);
    }
    absl::MutexLock l(&mu_);
    done_ = true;
  }

 private:
  SlotListener* const listener_;
  grpc::ClientContext context_;
  v1::AttendStreamResponse response_;
  mutable absl::Mutex mu_;
  bool outstanding_ ABSL_GUARDED_BY(mu_) = false;
  bool write_pending_ ABSL_GUARDED_BY(mu_) = false;
  const v1::AttendRequest* queued_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // OnDone started
  bool done_ ABSL_GUARDED_BY(mu_) = false;      // OnDone returned (last use)
  grpc::Status final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<Slot> MakeStreamSlot(v1::AttentionService::Stub* stub,
                                     SlotListener* listener) {
  return std::make_unique<StreamSlot>(stub, listener);
}

}  // namespace attn::loadgen
