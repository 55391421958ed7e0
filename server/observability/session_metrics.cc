#include "server/observability/session_metrics.h"

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace attn::server {

SessionMetrics::SessionMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  auto& bytes = prometheus::BuildGauge()
                    .Name("attn_kv_cache_bytes")
                    .Help(
                        "KV cache bytes held by sessions (used) and free; "
                        "their sum is the --kv_cache_bytes budget")
                    .Register(*registry_);
  used_ = &bytes.Add({{"state", "used"}});
  free_ = &bytes.Add({{"state", "free"}});
  active_family_ = &prometheus::BuildGauge()
                        .Name("attn_sessions_active")
                        .Help("Live sessions per model (all versions)")
                        .Register(*registry_);
  evictions_family_ =
      &prometheus::BuildCounter()
           .Name("attn_session_evictions_total")
           .Help(
               "Sessions freed by the server (cache_full, max_sessions, "
               "idle_timeout); their next step gets NOT_FOUND")
           .Register(*registry_);
  length_ = &prometheus::BuildHistogram()
                 .Name("attn_session_length_tokens")
                 .Help("Tokens a session held when it ended (any way)")
                 .Register(*registry_)
                 .Add({}, prometheus::Histogram::BucketBoundaries{
                              1, 16, 64, 256, 1024, 2048, 4096, 8192, 16384,
                              32768, 65536, 131072});
}

void SessionMetrics::CacheBytes(int64_t used, int64_t free) {
  used_->Set(static_cast<double>(used));
  free_->Set(static_cast<double>(free));
}

void SessionMetrics::SessionsActive(const std::string& model, int64_t count) {
  absl::MutexLock lock(&mu_);
  prometheus::Gauge*& g = active_[model];
  if (g == nullptr) g = &active_family_->Add({{"model", model}});
  g->Set(static_cast<double>(count));
}

void SessionMetrics::SessionEvicted(const std::string& model,
                                    const char* reason) {
  absl::MutexLock lock(&mu_);
  prometheus::Counter*& c = evictions_[{model, reason}];
  if (c == nullptr) {
    c = &evictions_family_->Add({{"model", model}, {"reason", reason}});
  }
  c->Increment();
}

void SessionMetrics::SessionEnded(int64_t length) {
  length_->Observe(static_cast<double>(length));
}

}  // namespace attn::server
