#include "server/api/health_status.h"

namespace attn::server {

HealthStatus::HealthStatus(grpc::HealthCheckServiceInterface* service)
    : service_(service) {
  if (service_ == nullptr) return;
  service_->SetServingStatus("", true);
  service_->SetServingStatus(kReadinessName, false);
}

void HealthStatus::SetReady(bool ready) {
  absl::MutexLock lock(&mu_);
  if (service_ == nullptr || draining_) return;
  service_->SetServingStatus(kReadinessName, ready);
}

void HealthStatus::SetModelReady(const std::string& model, bool ready) {
  absl::MutexLock lock(&mu_);
  if (service_ == nullptr || draining_) return;
  service_->SetServingStatus(ModelName(model), ready);
}

void HealthStatus::BeginDrain() {
  absl::MutexLock lock(&mu_);
  if (service_ == nullptr || draining_) return;
  draining_ = true;
  // NOT_SERVING for every registered name, and no later change.
  service_->Shutdown();
}

bool HealthStatus::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

}  // namespace attn::server
