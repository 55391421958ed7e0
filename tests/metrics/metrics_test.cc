// ServerMetrics in-process: what each recording call does to the series,
// the unknown-model label, and the pre-created series.
#include "server/observability/metrics.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace attn::server {
namespace {

std::shared_ptr<const Model> MakeModel(const std::string& name, int64_t version,
                                       int64_t max_queue_size = 8) {
  auto model = std::make_shared<Model>();
  model->name = name;
  model->version = version;
  model->config.batching.max_queue_size = max_queue_size;
  return model;
}

using LabelMap = std::map<std::string, std::string>;

// The value of one series (counter/gauge value, or histogram count).
double Get(const ServerMetrics& metrics, const std::string& name,
           const LabelMap& labels, bool histogram_sum = false) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& m : family.metric) {
      LabelMap got;
      for (const auto& l : m.label) got[l.name] = l.value;
      if (got != labels) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return m.counter.value;
        case prometheus::MetricType::Gauge:
          return m.gauge.value;
        case prometheus::MetricType::Histogram:
          return histogram_sum ? m.histogram.sample_sum
                               : static_cast<double>(m.histogram.sample_count);
        default:
          break;
      }
    }
  }
  ADD_FAILURE() << "no series " << name;
  return -1;
}

size_t SeriesCount(const ServerMetrics& metrics, const std::string& name) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name == name) return family.metric.size();
  }
  return 0;
}

TEST(ServerMetricsTest, SeriesExistAtZeroForEveryModelAndCode) {
  auto a1 = MakeModel("a", 1), a2 = MakeModel("a", 2), b = MakeModel("b", 3, 5);
  ServerMetrics metrics({a1, a2, b});
  // (a, b, unknown) x 17 codes.
  EXPECT_EQ(SeriesCount(metrics, "attn_requests_total"), 3u * 17);
  EXPECT_EQ(
      Get(metrics, "attn_requests_total", {{"model", "a"}, {"code", "OK"}}), 0);
  EXPECT_EQ(Get(metrics, "attn_requests_total",
                {{"model", "unknown"}, {"code", "NOT_FOUND"}}),
            0);
  // Histograms per model name, not for the unknown model.
  EXPECT_EQ(SeriesCount(metrics, "attn_request_duration_seconds"), 2u);
  EXPECT_EQ(SeriesCount(metrics, "attn_model_ready"), 3u);
  EXPECT_EQ(
      Get(metrics, "attn_model_ready", {{"model", "a"}, {"version", "2"}}), 1);
  EXPECT_EQ(
      Get(metrics, "attn_queue_capacity", {{"model", "b"}, {"version", "3"}}),
      5);
  EXPECT_EQ(Get(metrics, "attn_model_load_failures_total", {{"model", "b"}}),
            0);
  EXPECT_EQ(Get(metrics, "attn_inflight_requests", {}), 0);
  EXPECT_EQ(SeriesCount(metrics, "attn_build_info"), 1u);
  metrics.SetModelsReady(false);
  EXPECT_EQ(
      Get(metrics, "attn_model_ready", {{"model", "a"}, {"version", "2"}}), 0);
}

TEST(ServerMetricsTest, LifecycleEventsMoveTheModelSeries) {
  ServerMetrics metrics({});  // a lifecycle-managed server starts empty
  EXPECT_EQ(SeriesCount(metrics, "attn_model_ready"), 0u);
  auto m = std::make_shared<Model>();
  m->name = "m";
  m->version = 2;
  m->weight_bytes = 4096;
  m->config.batching.max_queue_size = 7;
  metrics.VersionReady(*m);
  const LabelMap v2 = {{"model", "m"}, {"version", "2"}};
  EXPECT_EQ(Get(metrics, "attn_model_ready", v2), 1);
  EXPECT_EQ(Get(metrics, "attn_model_memory_bytes", v2), 4096);
  EXPECT_EQ(Get(metrics, "attn_queue_capacity", v2), 7);
  // The new model's request series exist, so its requests are not
  // "unknown" any more.
  RequestMetrics r = metrics.StartRequest();
  r.SetModel("m");
  r.Finish(absl::StatusCode::kOk, true);
  EXPECT_EQ(
      Get(metrics, "attn_requests_total", {{"model", "m"}, {"code", "OK"}}), 1);
  metrics.TaskQueued(*m);
  EXPECT_EQ(Get(metrics, "attn_queue_depth", v2), 1);
  metrics.TaskDequeued(*m, absl::Milliseconds(1));

  metrics.LoadSucceeded("m", absl::Milliseconds(250));
  EXPECT_EQ(Get(metrics, "attn_model_load_duration_seconds", {{"model", "m"}}),
            1);
  EXPECT_DOUBLE_EQ(Get(metrics, "attn_model_load_duration_seconds",
                       {{"model", "m"}}, /*histogram_sum=*/true),
                   0.25);
  metrics.LoadFailed("m");
  metrics.LoadFailed("m");
  EXPECT_EQ(Get(metrics, "attn_model_load_failures_total", {{"model", "m"}}),
            2);
  metrics.VersionUnrouted("m", 2);  // out of routing, memory still held
  EXPECT_EQ(Get(metrics, "attn_model_ready", v2), 0);
  EXPECT_EQ(Get(metrics, "attn_model_memory_bytes", v2), 4096);
  metrics.VersionFreed("m", 2);
  EXPECT_EQ(Get(metrics, "attn_model_memory_bytes", v2), 0);
}

TEST(ServerMetricsTest, RequestsCountedByModelAndCode) {
  auto a = MakeModel("a", 1);
  ServerMetrics metrics({a});
  RequestMetrics ok = metrics.StartRequest();
  ok.SetModel("a");
  RequestMetrics missing = metrics.StartRequest();
  missing.SetModel("no-such-model");
  RequestMetrics unnamed = metrics.StartRequest();  // never SetModel
  EXPECT_EQ(Get(metrics, "attn_inflight_requests", {}), 3);

  ok.Finish(absl::StatusCode::kOk, /*reached_executor=*/true);
  missing.Finish(absl::StatusCode::kNotFound, /*reached_executor=*/false);
  unnamed.Finish(absl::StatusCode::kInvalidArgument, false);
  EXPECT_EQ(Get(metrics, "attn_inflight_requests", {}), 0);
  EXPECT_EQ(
      Get(metrics, "attn_requests_total", {{"model", "a"}, {"code", "OK"}}), 1);
  EXPECT_EQ(Get(metrics, "attn_requests_total",
                {{"model", "unknown"}, {"code", "NOT_FOUND"}}),
            1);
  EXPECT_EQ(Get(metrics, "attn_requests_total",
                {{"model", "unknown"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  EXPECT_EQ(Get(metrics, "attn_request_duration_seconds", {{"model", "a"}}), 1);
  // No series was created for the unknown name.
  EXPECT_EQ(SeriesCount(metrics, "attn_requests_total"), 2u * 17);

  // A second Finish on the same copy records nothing.
  ok.Finish(absl::StatusCode::kOk, true);
  EXPECT_EQ(
      Get(metrics, "attn_requests_total", {{"model", "a"}, {"code", "OK"}}), 1);
  EXPECT_EQ(Get(metrics, "attn_inflight_requests", {}), 0);

  // Disabled metrics: a default RequestMetrics does nothing.
  RequestMetrics off;
  off.SetModel("a");
  off.Finish(absl::StatusCode::kOk, true);
  EXPECT_EQ(
      Get(metrics, "attn_requests_total", {{"model", "a"}, {"code", "OK"}}), 1);
}

TEST(ServerMetricsTest, BatchObserverFeedsQueueAndBatchSeries) {
  auto a = MakeModel("a", 1);
  auto stranger = MakeModel("a", 7);  // not given to ServerMetrics
  ServerMetrics metrics({a});
  BatchObserver& observer = metrics;
  observer.TaskQueued(*a);
  observer.TaskQueued(*a);
  EXPECT_EQ(
      Get(metrics, "attn_queue_depth", {{"model", "a"}, {"version", "1"}}), 2);
  observer.TaskDequeued(*a, absl::Milliseconds(3));
  EXPECT_EQ(
      Get(metrics, "attn_queue_depth", {{"model", "a"}, {"version", "1"}}), 1);
  EXPECT_EQ(Get(metrics, "attn_queue_duration_seconds", {{"model", "a"}}), 1);
  EXPECT_DOUBLE_EQ(
      Get(metrics, "attn_queue_duration_seconds", {{"model", "a"}}, true),
      0.003);

  observer.BatchComputed(*a, 3, 96, absl::Milliseconds(2), absl::OkStatus());
  observer.BatchComputed(*a, 1, 10, absl::Milliseconds(1),
                         absl::InternalError("kernel failed"));
  EXPECT_EQ(Get(metrics, "attn_compute_duration_seconds", {{"model", "a"}}), 2);
  EXPECT_EQ(Get(metrics, "attn_batch_requests", {{"model", "a"}}), 2);
  EXPECT_EQ(Get(metrics, "attn_batch_requests", {{"model", "a"}}, true), 4);
  EXPECT_EQ(Get(metrics, "attn_batch_tokens", {{"model", "a"}}, true), 106);
  // Only successful kernel calls count as tokens served.
  EXPECT_EQ(Get(metrics, "attn_tokens_total", {{"model", "a"}}), 96);

  // A model the metrics do not know is ignored (no new series).
  observer.TaskQueued(*stranger);
  observer.BatchComputed(*stranger, 1, 5, absl::Milliseconds(1),
                         absl::OkStatus());
  EXPECT_EQ(SeriesCount(metrics, "attn_queue_depth"), 1u);
  EXPECT_EQ(Get(metrics, "attn_tokens_total", {{"model", "a"}}), 96);
}

TEST(ServerMetricsTest, RealModelNamedUnknownSharesTheUnknownLabel) {
  auto unknown = MakeModel("unknown", 1);
  ServerMetrics metrics({unknown});
  EXPECT_EQ(SeriesCount(metrics, "attn_requests_total"), 17u);
  RequestMetrics r = metrics.StartRequest();
  r.SetModel("other");
  r.Finish(absl::StatusCode::kNotFound, false);
  RequestMetrics s = metrics.StartRequest();
  s.SetModel("unknown");
  s.Finish(absl::StatusCode::kOk, true);
  EXPECT_EQ(
      Get(metrics, "attn_request_duration_seconds", {{"model", "unknown"}}), 1);
  EXPECT_EQ(Get(metrics, "attn_requests_total",
                {{"model", "unknown"}, {"code", "NOT_FOUND"}}),
            1);
}

}  // namespace
}  // namespace attn::server
