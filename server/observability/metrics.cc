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
  // Null for the unknown model.
  prometheus::Counter* load_failures = nullptr;
  prometheus::Histogram* load_duration = nullptr;
};

// Series labelled by model name and version.
struct VersionSeries {
  NameSeries* name = nullptr;
  prometheus::Gauge* queue_depth = nullptr;
  prometheus::Gauge* ready = nullptr;
  prometheus::Gauge* memory = nullptr;
  prometheus::Gauge* queue_capacity = nullptr;
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

// Model load times, seconds: 10 ms to 10 min.
prometheus::Histogram::BucketBoundaries LoadBuckets() {
  return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
          5,    10,    30,   60,  120,  300, 600};
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

ServerMetrics::ServerMetrics(
    const std::vector<std::shared_ptr<const Model>>& models)
    : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;

  requests_ =
      &BuildCounter()
           .Name("attn_requests_total")
           .Help(
               "Attend requests answered (unary calls and stream messages), "
               "by model and gRPC status code.")
           .Register(r);
  request_duration_ =
      &BuildHistogram()
           .Name("attn_request_duration_seconds")
           .Help(
               "Time from receiving an Attend request to answering it, for "
               "requests that were queued (computed, or dropped as "
               "cancelled / past deadline).")
           .Register(r);
  queue_duration_ =
      &BuildHistogram()
           .Name("attn_queue_duration_seconds")
           .Help(
               "Time a request waited in its model's queue before compute "
               "(or before being dropped).")
           .Register(r);
  compute_duration_ = &BuildHistogram()
                           .Name("attn_compute_duration_seconds")
                           .Help("Duration of one kernel call (one batch).")
                           .Register(r);
  batch_requests_ = &BuildHistogram()
                         .Name("attn_batch_requests")
                         .Help("Requests served by one kernel call.")
                         .Register(r);
  batch_tokens_ = &BuildHistogram()
                       .Name("attn_batch_tokens")
                       .Help(
                           "Query tokens (batch x Sq, summed over the "
                           "requests) computed by one kernel call.")
                       .Register(r);
  tokens_ = &BuildCounter()
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
  queue_depth_ = &BuildGauge()
                      .Name("attn_queue_depth")
                      .Help(
                          "Requests waiting in the queue of a model "
                          "version.")
                      .Register(r);
  queue_capacity_ =
      &BuildGauge()
           .Name("attn_queue_capacity")
           .Help(
               "batching.max_queue_size of a model version: a request "
               "arriving at a full queue is UNAVAILABLE.")
           .Register(r);
  ready_ = &BuildGauge()
                .Name("attn_model_ready")
                .Help(
                    "1 if the model version is loaded and serving, 0 "
                    "otherwise.")
                .Register(r);
  load_failures_ =
      &BuildCounter()
           .Name("attn_model_load_failures_total")
           .Help(
               "Refused loads of a model: a malformed or truncated "
               "checkpoint, a file still being written, a config.json that "
               "does not parse or fit, a failed warm-up. The served version "
               "keeps serving.")
           .Register(r);
  load_duration_ = &BuildHistogram()
                        .Name("attn_model_load_duration_seconds")
                        .Help(
                            "Time to load one model version: read, convert, "
                            "pack and warm up, until it serves.")
                        .Register(r);
  memory_ = &BuildGauge()
                 .Name("attn_model_memory_bytes")
                 .Help(
                     "Bytes of weights a model version holds: set when it "
                     "loads, kept while it unloads (in-flight requests), 0 "
                     "once freed.")
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

  unknown_ = std::make_unique<NameSeries>();
  AddRequestSeries(kUnknownModelLabel, unknown_.get());
  {
    absl::MutexLock lock(&series_mu_);
    unknown_series_ = unknown_.get();
    for (const std::shared_ptr<const Model>& model : models) {
      if (model == nullptr) continue;
      VersionSeries* v = EnsureVersionLocked(model->name, model->version,
                                             &model->config.batching);
      v->ready->Set(1);
      v->memory->Set(static_cast<double>(model->weight_bytes));
    }
  }
}

void ServerMetrics::AddRequestSeries(const std::string& label, NameSeries* s) {
  for (int c = 0; c < kNumCodes; ++c) {
    s->requests[c] = &requests_->Add(
        {{"model", label},
         {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}});
  }
}

ServerMetrics::NameSeries* ServerMetrics::EnsureNameLocked(
    const std::string& model) {
  std::unique_ptr<NameSeries>& name = names_[model];
  if (name == nullptr) {
    name = std::make_unique<NameSeries>();
    const prometheus::Labels l = {{"model", model}};
    AddRequestSeries(model, name.get());
    name->request_duration = &request_duration_->Add(l, LatencyBuckets());
    name->queue_duration = &queue_duration_->Add(l, LatencyBuckets());
    name->compute_duration = &compute_duration_->Add(l, LatencyBuckets());
    name->batch_requests = &batch_requests_->Add(l, BatchRequestBuckets());
    name->batch_tokens = &batch_tokens_->Add(l, BatchTokenBuckets());
    name->tokens = &tokens_->Add(l);
    name->load_failures = &load_failures_->Add(l);
    name->load_duration = &load_duration_->Add(l, LoadBuckets());
    // A real model named "unknown" shares the unknown model's request
    // counters (Family::Add returned the same ones) and has real histograms.
    if (model == kUnknownModelLabel) unknown_series_ = name.get();
  }
  return name.get();
}

ServerMetrics::VersionSeries* ServerMetrics::EnsureVersionLocked(
    const std::string& model, int64_t version,
    const BatchingOptions* batching) {
  std::unique_ptr<VersionSeries>& v = versions_[{model, version}];
  if (v == nullptr) {
    v = std::make_unique<VersionSeries>();
    const prometheus::Labels lv = {{"model", model},
                                   {"version", absl::StrCat(version)}};
    v->name = EnsureNameLocked(model);
    v->queue_depth = &queue_depth_->Add(lv);
    v->ready = &ready_->Add(lv);
    v->memory = &memory_->Add(lv);
    v->queue_capacity = &queue_capacity_->Add(lv);
  }
  if (batching != nullptr) {
    v->queue_capacity->Set(static_cast<double>(batching->max_queue_size));
  }
  return v.get();
}

ServerMetrics::~ServerMetrics() = default;

const ServerMetrics::NameSeries* ServerMetrics::FindName(
    absl::string_view model) const {
  absl::ReaderMutexLock lock(&series_mu_);
  auto it = names_.find(model);
  return it != names_.end() ? it->second.get() : unknown_series_.load();
}

const ServerMetrics::VersionSeries* ServerMetrics::FindVersion(
    const Model& model) const {
  absl::ReaderMutexLock lock(&series_mu_);
  auto it = versions_.find(std::make_pair(model.name, model.version));
  return it == versions_.end() ? nullptr : it->second.get();
}

void ServerMetrics::VersionReady(const Model& model) {
  absl::MutexLock lock(&series_mu_);
  VersionSeries* v =
      EnsureVersionLocked(model.name, model.version, &model.config.batching);
  v->ready->Set(1);
  v->memory->Set(static_cast<double>(model.weight_bytes));
}

void ServerMetrics::VersionUnrouted(const std::string& name, int64_t version) {
  absl::MutexLock lock(&series_mu_);
  EnsureVersionLocked(name, version, nullptr)->ready->Set(0);
}

void ServerMetrics::VersionFreed(const std::string& name, int64_t version) {
  absl::MutexLock lock(&series_mu_);
  EnsureVersionLocked(name, version, nullptr)->memory->Set(0);
}

void ServerMetrics::LoadSucceeded(const std::string& name,
                                  absl::Duration took) {
  absl::MutexLock lock(&series_mu_);
  EnsureNameLocked(name)->load_duration->Observe(Seconds(took));
}

void ServerMetrics::LoadFailed(const std::string& name) {
  absl::MutexLock lock(&series_mu_);
  EnsureNameLocked(name)->load_failures->Increment();
}

RequestMetrics ServerMetrics::StartRequest() {
  inflight_->Increment();
  RequestMetrics r;
  r.metrics_ = this;
  r.series_ = unknown_series_.load();
  r.start_ = std::chrono::steady_clock::now();
  return r;
}

void ServerMetrics::AuthRejected(AuthResult reason) {
  prometheus::Counter* counter = auth_rejected_[static_cast<int>(reason)];
  if (counter != nullptr) counter->Increment();
}

void ServerMetrics::SetModelsReady(bool ready) {
  absl::MutexLock lock(&series_mu_);
  for (const auto& [key, series] : versions_) {
    series->ready->Set(ready ? 1 : 0);
  }
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
  if (reached_executor && series_->request_duration != nullptr) {
    const std::chrono::duration<double> elapsed =
        std::chrono::steady_clock::now() - start_;
    series_->request_duration->Observe(elapsed.count());
  }
  metrics_->inflight_->Decrement();
  metrics_ = nullptr;  // a second Finish() on this copy records nothing
}

}  // namespace attn::server
