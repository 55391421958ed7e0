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
  if (draining_) return;
  ready_ = ready;
  if (service_ == nullptr) return;
  service_->SetServingStatus(kReadinessName, ready);
}

void HealthStatus::SetModelReady(const std::string& model, bool ready) {
  absl::MutexLock lock(&mu_);
  if (draining_) return;
  model_ready_[model] = ready;
  if (service_ == nullptr) return;
  service_->SetServingStatus(ModelName(model), ready);
}

void HealthStatus::BeginDrain() {
  absl::MutexLock lock(&mu_);
  if (draining_) return;
  draining_ = true;
  if (service_ == nullptr) return;
  // NOT_SERVING for every registered name, and no later change.
  service_->Shutdown();
}

bool HealthStatus::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

bool HealthStatus::ServerReady() const {
  absl::MutexLock lock(&mu_);
  return ready_ && !draining_;
}

bool HealthStatus::ModelReady(const std::string& model) const {
  absl::MutexLock lock(&mu_);
  if (draining_) return false;
  auto it = model_ready_.find(model);
  return it != model_ready_.end() && it->second;
}

}  // namespace attn::server
