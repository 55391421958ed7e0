// Prometheus metrics of sessions and the KV cache (a SessionObserver),
// registered in the server's registry next to ServerMetrics' families:
//   attn_kv_cache_bytes{state="used"|"free"}          gauge
//   attn_sessions_active{model}                       gauge
//   attn_session_evictions_total{model,reason}        counter (reason:
//       cache_full, max_sessions, idle_timeout; EndSession is not counted)
//   attn_session_length_tokens                        histogram, the length
//       of each session when it ends (any way)
//
//   SessionMetrics metrics(server_metrics.registry());
//   SessionTable::Options options;
//   options.observer = &metrics;   // not owned; outlives the table
//
// Label values are bounded: model names come from the repository (series
// are created on first use, at most one per model and reason).
//
// Thread-safety: all methods may be called concurrently from any thread.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_SESSION_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_SESSION_METRICS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/serving/session_observer.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace attn::server {

class SessionMetrics final : public SessionObserver {
 public:
  // Registers the families in `registry` (shared, must be non-null).
  explicit SessionMetrics(std::shared_ptr<prometheus::Registry> registry);

  void CacheBytes(int64_t used, int64_t free) override;
  void SessionsActive(const std::string& model, int64_t count) override;
  void SessionEvicted(const std::string& model, const char* reason) override;
  void SessionEnded(int64_t length) override;

 private:
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* used_ = nullptr;
  prometheus::Gauge* free_ = nullptr;
  prometheus::Histogram* length_ = nullptr;
  prometheus::Family<prometheus::Gauge>* active_family_ = nullptr;
  prometheus::Family<prometheus::Counter>* evictions_family_ = nullptr;

  absl::Mutex mu_;
  std::map<std::string, prometheus::Gauge*> active_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, prometheus::Counter*> evictions_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_SESSION_METRICS_H_
