// UnarySlot: one Attend call at a time on the callback API.
#include <chrono>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "client/loadgen/slot.h"

namespace attn::loadgen {

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

CallOutcome OutcomeOf(const grpc::Status& status,
                      const v1::AttendResponse& response) {
  CallOutcome o;
  o.code = status.error_code();
  if (status.ok()) {
    o.queue_us = response.timing().queue_us();
    o.compute_us = response.timing().compute_us();
    o.batch_requests = response.timing().batch_requests();
  }
  return o;
}

class UnarySlot final : public Slot {
 public:
  UnarySlot(v1::AttentionService::Stub* stub, SlotListener* listener,
            absl::Duration deadline)
      : stub_(stub), listener_(listener), deadline_(deadline) {}

  void Send(const v1::AttendRequest* request) override {
    grpc::ClientContext* context = FreshContext(&mu_, &context_, deadline_);
    response_.Clear();
    stub_->async()->Attend(
        context, request, &response_, [this](grpc::Status status) {
          listener_->OnComplete(this, OutcomeOf(status, response_));
        });
  }

  void Cancel() override {
    absl::MutexLock l(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }

 private:
  v1::AttentionService::Stub* const stub_;
  SlotListener* const listener_;
  const absl::Duration deadline_;
  absl::Mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(mu_);
  v1::AttendResponse response_;
};

}  // namespace

std::unique_ptr<Slot> MakeUnarySlot(v1::AttentionService::Stub* stub,
                                    SlotListener* listener,
                                    absl::Duration deadline) {
  return std::make_unique<UnarySlot>(stub, listener, deadline);
}

}  // namespace attn::loadgen
