// The HTTP endpoint Prometheus scrapes: prometheus-cpp's Exposer (civetweb)
// serving GET /metrics on its own port, separate from gRPC, with the
// server's registry and the process_* collector.
//
//   auto endpoint = MetricsEndpoint::Start("0.0.0.0", 9090,
//   metrics.registry()); if (!endpoint.ok()) ...;  // UNAVAILABLE: port in use,
//   bad host
//   (*endpoint)->port();
//
// Thread-safety: immutable after Start(); the Exposer serves scrapes on its
// own threads, which only read the registry and /proc.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_METRICS_ENDPOINT_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace attn::server {

class ProcessCollector;

class MetricsEndpoint {
 public:
  // Serves `registry` and the process metrics at http://host:port/metrics.
  // `host` as in ServerOptions (IPv6 literals with or without brackets).
  // Errors: INVALID_ARGUMENT for a port outside 1..65535; UNAVAILABLE if the
  // address cannot be bound (message names it).
  // REQUIRES: registry != nullptr.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& host, int port,
      std::shared_ptr<prometheus::Registry> registry);

  // Stops serving (waits for a scrape in progress).
  ~MetricsEndpoint();

  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The bound port.
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;

  int port_ = 0;
  // Kept alive here: the Exposer holds weak pointers only.
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<ProcessCollector> process_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // destroyed first
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_METRICS_ENDPOINT_H_
