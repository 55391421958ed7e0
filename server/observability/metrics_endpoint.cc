#include "server/observability/metrics_endpoint.h"

#include <exception>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "server/observability/process_metrics.h"

namespace attn::server {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& host, int port,
    std::shared_ptr<prometheus::Registry> registry) {
  if (registry == nullptr) {
    return absl::InvalidArgumentError("MetricsEndpoint: no registry");
  }
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics port is ", port, "; expected 1 to 65535"));
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        "metrics host is empty; use e.g. 0.0.0.0 or 127.0.0.1");
  }
  // civetweb's listening_ports syntax: "host:port", "[v6]:port".
  const std::string address =
      absl::StrContains(host, ':') && !absl::StartsWith(host, "[")
          ? absl::StrCat("[", host, "]:", port)
          : absl::StrCat(host, ":", port);

  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  endpoint->registry_ = std::move(registry);
  endpoint->process_ = std::make_shared<ProcessCollector>();
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(address, 2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(
        "could not serve metrics on ", address, " (", e.what(),
        "); is the port in use? pick another --metrics_port, or 0 to turn "
        "metrics off"));
  }
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  endpoint->port_ = ports.empty() ? port : ports.front();
  endpoint->exposer_->RegisterCollectable(endpoint->registry_);
  endpoint->exposer_->RegisterCollectable(endpoint->process_);
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() { exposer_.reset(); }

}  // namespace attn::server
