#include "server/observability/metrics.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

#ifndef ATTN_VERSION
#define ATTN_VERSION "unknown"
#endif

namespace attn::server {
namespace metrics_internal {

// Series labelled by model name (shared by its versions).
struct NameSeries {
  // Indexed by absl::StatusCode (0..16, the gRPC code space).
  prometheus::Counter* requests[17] = {};
  // Null for the unknown model (its requests never reach the executor).
  prometheus::Histogram* request_duration = nullptr;
  prometheus::Histogram* queue_duration = nullptr;
  prometheus::Histogram* compute_duration = nullptr;
  prometheus::Histogram* batch_requests = nullptr;
  prometheus::Histogram* batch_tokens = nullptr;
  prometheus::Counter* tokens = nullptr;
};

// Series labelled by model name and version.
struct VersionSeries {
  NameSeries* name = nullptr;
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Gauge* ready = nullptr;
};

}  // namespace metrics_internal
namespace {

// gRPC status codes 0..16 (OK .. UNAUTHENTICATED); absl's code space and
// names (absl::StatusCodeToString) are gRPC's.
constexpr int kNumCodes = 17;

// Latency buckets, seconds: 50 us to 10 s, about three per decade.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
}

// Requests per kernel call: 1 to 256.
prometheus::Histogram::BucketBoundaries BatchRequestBuckets() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256};
}

// Query tokens per kernel call: 1 to 64 Ki.
prometheus::Histogram::BucketBoundaries BatchTokenBuckets() {
  return {1, 4, 16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536};
}

double Seconds(absl::Duration d) {
  return d < absl::ZeroDuration() ? 0.0 : absl::ToDoubleSeconds(d);
}

int CodeIndex(absl::StatusCode code) {
  const int i = static_cast<int>(code);
  return (i >= 0 && i < kNumCodes)
             ? i
             : static_cast<int>(absl::StatusCode::kUnknown);
}

std::string OneDnnVersion() {
  const dnnl::version_t* v = dnnl::version();
  if (v == nullptr) return "unknown";
  return absl::StrCat(v->major, ".", v->minor, ".", v->patch);
}

}  // namespace

const char* ProtocolLabel(Protocol protocol) {
  switch (protocol) {
    case Protocol::kAttnV1:
      return "attn_v1";
    case Protocol::kKserveGrpc:
      return "kserve_grpc";
    case Protocol::kKserveHttp:
      return "kserve_http";
  }
  return "attn_v1";
}

ServerMetrics::ServerMetrics(
    const std::vector<std::shared_ptr<const Model>>& models)
    : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;

  auto& requests =
      BuildCounter()
          .Name("attn_requests_total")
          .Help(
              "Attend requests answered (unary calls and stream messages), "
              "by model and gRPC status code.")
          .Register(r);
  auto& request_duration =
      BuildHistogram()
          .Name("attn_request_duration_seconds")
          .Help(
              "Time from receiving an Attend request to answering it, for "
              "requests that were queued (computed, or dropped as "
              "cancelled / past deadline).")
          .Register(r);
  auto& queue_duration =
      BuildHistogram()
          .Name("attn_queue_duration_seconds")
          .Help(
              "Time a request waited in its model's queue before compute "
              "(or before being dropped).")
          .Register(r);
  auto& compute_duration = BuildHistogram()
                               .Name("attn_compute_duration_seconds")
                               .Help("Duration of one kernel call (one batch).")
                               .Register(r);
  auto& batch_requests = BuildHistogram()
                             .Name("attn_batch_requests")
                             .Help("Requests served by one kernel call.")
                             .Register(r);
  auto& batch_tokens = BuildHistogram()
                           .Name("attn_batch_tokens")
                           .Help(
                               "Query tokens (batch x Sq, summed over the "
                               "requests) computed by one kernel call.")
                           .Register(r);
  auto& tokens = BuildCounter()
                     .Name("attn_tokens_total")
                     .Help("Query tokens computed successfully.")
                     .Register(r);
  auto& inflight =
      BuildGauge()
          .Name("attn_inflight_requests")
          .Help(
              "Attend requests received and not yet answered (validating, "
              "queued or computing).")
          .Register(r);
  auto& queue_depth = BuildGauge()
                          .Name("attn_queue_depth")
                          .Help(
                              "Requests waiting in the queue of a model "
                              "version.")
                          .Register(r);
  auto& queue_capacity =
      BuildGauge()
          .Name("attn_queue_capacity")
          .Help(
              "batching.max_queue_size of a model version: a request "
              "arriving at a full queue is UNAVAILABLE.")
          .Register(r);
  auto& ready = BuildGauge()
                    .Name("attn_model_ready")
                    .Help(
                        "1 if the model version is loaded and serving, 0 "
                        "otherwise.")
                    .Register(r);
  auto& load_failures =
      BuildCounter()
          .Name("attn_model_load_failures_total")
          .Help(
              "Failed loads of a model. A load failure at start-up stops "
              "the server, so a running server reports 0.")
          .Register(r);
  auto& build_info =
      BuildGauge()
          .Name("attn_build_info")
          .Help(
              "Always 1; the labels give the attnserve version and the "
              "gRPC and oneDNN versions it runs with.")
          .Register(r);

  build_info
      .Add({{"version", ATTN_VERSION},
            {"grpc_version", grpc::Version()},
            {"onednn_version", OneDnnVersion()}})
      .Set(1);
  inflight_ = &inflight.Add({});
  auto& auth_rejected =
      BuildCounter()
          .Name("attn_auth_rejected_total")
          .Help(
              "Calls refused by the bearer-token check (--auth_token_file), "
              "by reason: missing, malformed (UNAUTHENTICATED), "
              "unknown_token (PERMISSION_DENIED).")
          .Register(r);
  for (AuthResult reason : {AuthResult::kMissing, AuthResult::kMalformed,
                            AuthResult::kUnknownToken}) {
    auth_rejected_[static_cast<int>(reason)] =
        &auth_rejected.Add({{"reason", AuthResultReason(reason)}});
  }

  auto& protocol_requests =
      BuildCounter()
          .Name("attn_protocol_requests_total")
          .Help(
              "Inference requests answered, by the API they came in on "
              "(attn_v1, kserve_grpc, kserve_http) and gRPC status code; "
              "the same requests as attn_requests_total.")
          .Register(r);
  for (int p = 0; p < kNumProtocols; ++p) {
    for (int c = 0; c < kNumCodes; ++c) {
      protocol_requests_[p][c] = &protocol_requests.Add(
          {{"protocol", ProtocolLabel(static_cast<Protocol>(p))},
           {"code",
            absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}});
    }
  }

  auto add_requests = [&](const std::string& label, NameSeries* s) {
    for (int c = 0; c < kNumCodes; ++c) {
      s->requests[c] = &requests.Add(
          {{"model", label},
           {"code",
            absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}});
    }
  };
  unknown_ = std::make_unique<NameSeries>();
  add_requests(kUnknownModelLabel, unknown_.get());

  for (const std::shared_ptr<const Model>& model : models) {
    if (model == nullptr) continue;
    std::unique_ptr<NameSeries>& name = names_[model->name];
    if (name == nullptr) {
      name = std::make_unique<NameSeries>();
      const prometheus::Labels l = {{"model", model->name}};
      add_requests(model->name, name.get());
      name->request_duration = &request_duration.Add(l, LatencyBuckets());
      name->queue_duration = &queue_duration.Add(l, LatencyBuckets());
      name->compute_duration = &compute_duration.Add(l, LatencyBuckets());
      name->batch_requests = &batch_requests.Add(l, BatchRequestBuckets());
      name->batch_tokens = &batch_tokens.Add(l, BatchTokenBuckets());
      name->tokens = &tokens.Add(l);
      load_failures.Add(l);  // 0: a failed load stops the server today
    }
    auto version = std::make_unique<VersionSeries>();
    const prometheus::Labels lv = {{"model", model->name},
                                   {"version", absl::StrCat(model->version)}};
    version->name = name.get();
    version->queue_depth = &queue_depth.Add(lv);
    version->ready = &ready.Add(lv);
    version->ready->Set(1);
    queue_capacity.Add(lv).Set(
        static_cast<double>(model->config.batching.max_queue_size));
    versions_[model.get()] = std::move(version);
  }
  // A real model named "unknown" shares the unknown model's request
  // counters (Family::Add returned the same ones) and has real histograms.
  auto it = names_.find(kUnknownModelLabel);
  unknown_series_ = it != names_.end() ? it->second.get() : unknown_.get();
}

ServerMetrics::~ServerMetrics() = default;

const ServerMetrics::NameSeries* ServerMetrics::FindName(
    absl::string_view model) const {
  auto it = names_.find(model);
  return it != names_.end() ? it->second.get() : unknown_series_;
}

const ServerMetrics::VersionSeries* ServerMetrics::FindVersion(
    const Model& model) const {
  auto it = versions_.find(&model);
  return it == versions_.end() ? nullptr : it->second.get();
}

RequestMetrics ServerMetrics::StartRequest() {
  inflight_->Increment();
  RequestMetrics r;
  r.metrics_ = this;
  r.series_ = unknown_series_;
  r.start_ = std::chrono::steady_clock::now();
  return r;
}

void ServerMetrics::AuthRejected(AuthResult reason) {
  prometheus::Counter* counter = auth_rejected_[static_cast<int>(reason)];
  if (counter != nullptr) counter->Increment();
}

void ServerMetrics::SetModelsReady(bool ready) {
  for (const auto& [model, series] : versions_)
    series->ready->Set(ready ? 1 : 0);
}

void ServerMetrics::TaskQueued(const Model& model) {
  const VersionSeries* v = FindVersion(model);
  if (v != nullptr) v->queue_depth->Increment();
}

void ServerMetrics::TaskDequeued(const Model& model, absl::Duration waited) {
  const VersionSeries* v = FindVersion(model);
  if (v == nullptr) return;
  v->queue_depth->Decrement();
  v->name->queue_duration->Observe(Seconds(waited));
}

void ServerMetrics::BatchComputed(const Model& model, int64_t requests,
                                  int64_t tokens, absl::Duration compute,
                                  const absl::Status& status) {
  const VersionSeries* v = FindVersion(model);
  if (v == nullptr) return;
  NameSeries& s = *v->name;
  s.compute_duration->Observe(Seconds(compute));
  s.batch_requests->Observe(static_cast<double>(requests));
  s.batch_tokens->Observe(static_cast<double>(tokens));
  if (status.ok()) s.tokens->Increment(static_cast<double>(tokens));
}

void RequestMetrics::SetModel(absl::string_view model) {
  if (metrics_ != nullptr) series_ = metrics_->FindName(model);
}

void RequestMetrics::Finish(absl::StatusCode code, bool reached_executor) {
  if (metrics_ == nullptr) return;
  series_->requests[CodeIndex(code)]->Increment();
  metrics_->protocol_requests_[static_cast<int>(protocol_)][CodeIndex(code)]
      ->Increment();
  if (reached_executor && series_->request_duration != nullptr) {
    const std::chrono::duration<double> elapsed =
        std::chrono::steady_clock::now() - start_;
    series_->request_duration->Observe(elapsed.count());
  }
  metrics_->inflight_->Decrement();
  metrics_ = nullptr;  // a second Finish() on this copy records nothing
}

}  // namespace attn::server
