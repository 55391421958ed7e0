// The grpc.health.v1 names attn_server reports, behind one small class.
//
//   ""                                  liveness: SERVING while the process
//                                       runs and is not draining;
//   "attn.v1.AttentionService"          readiness: SERVING once every model
//                                       loaded at start-up is ready;
//   "attn.v1.AttentionService/<model>"  readiness of one model.
//
//   HealthStatus health(server->GetHealthCheckService());
//   health.SetModelReady("demo", true);
//   health.SetReady(true);
//   ...
//   health.BeginDrain();  // every name NOT_SERVING, later updates ignored
//
// Thread-safety: every method may be called from any thread concurrently.
// Ownership: `service` is not owned and must outlive this object (it is the
// grpc::Server's, so destroy this before the server).
#ifndef ATTNSERVE_SERVER_API_HEALTH_STATUS_H_
#define ATTNSERVE_SERVER_API_HEALTH_STATUS_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/health_check_service_interface.h"

namespace attn::server {

// The readiness name; per-model names are kReadinessName + "/" + model.
inline constexpr char kReadinessName[] = "attn.v1.AttentionService";

class HealthStatus {
 public:
  // Sets liveness ("") to SERVING and readiness to NOT_SERVING. `service`
  // may be null (health disabled): then every method does nothing.
  explicit HealthStatus(grpc::HealthCheckServiceInterface* service);

  HealthStatus(const HealthStatus&) = delete;
  HealthStatus& operator=(const HealthStatus&) = delete;

  // Readiness of the whole server (attn.v1.AttentionService). Ignored once
  // draining.
  void SetReady(bool ready);
  // Readiness of `model` (attn.v1.AttentionService/<model>). Ignored once
  // draining.
  void SetModelReady(const std::string& model, bool ready);
  // Every name turns NOT_SERVING at once; later Set* calls are ignored.
  // Idempotent.
  void BeginDrain();
  bool draining() const;

  static std::string ModelName(const std::string& model) {
    return std::string(kReadinessName) + "/" + model;
  }

 private:
  grpc::HealthCheckServiceInterface* const service_;  // may be null
  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_HEALTH_STATUS_H_
