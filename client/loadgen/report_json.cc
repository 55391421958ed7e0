// The JSON report (schema: docs/loadgen.md).
#include <cmath>

#include "absl/time/time.h"
#include "client/loadgen/report.h"
#include "nlohmann/json.hpp"

namespace attn::loadgen {
namespace {

using nlohmann::json;

// Rounds to `unit` (a power of ten) so that the JSON prints short numbers.
double Round(double v, double unit) {
  const double scale = std::round(1.0 / unit);
  return std::round(v * scale) / scale;
}

json LatencyJson(const LatencyHistogram& h) {
  auto us = [&](double q) { return Round(QuantileUs(h, q), 0.1); };
  return {{"count", h.count()},
          {"min", Round(static_cast<double>(h.min()) / 1e3, 0.1)},
          {"mean", Round(h.mean() / 1e3, 0.1)},
          {"p50", us(0.50)},
          {"p90", us(0.90)},
          {"p95", us(0.95)},
          {"p99", us(0.99)},
          {"p999", us(0.999)},
          {"max", Round(static_cast<double>(h.max()) / 1e3, 0.1)}};
}

json StepJson(const StepResult& s) {
  const WindowResult& r = s.result;
  json status = json::object();
  for (int c = 0; c < kNumStatusCodes; ++c) {
    if (r.status_counts[c] != 0) status[StatusCodeName(c)] = r.status_counts[c];
  }
  json curve = json::array();
  for (double p :
       {0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0}) {
    curve.push_back({p, Round(QuantileUs(r.latency_ns, p / 100), 0.1)});
  }
  const double ok = static_cast<double>(r.ok);
  auto mean = [&](int64_t sum) {
    return ok > 0 ? Round(static_cast<double>(sum) / ok, 0.01) : 0.0;
  };
  json step = {
      {"label", s.level.Label()},
      {"mode", s.level.open_loop ? "open_loop" : "closed_loop"},
      {"concurrency",
       s.level.open_loop ? json(nullptr) : json(s.level.concurrency)},
      {"target_rate", s.level.open_loop ? json(s.level.rate) : json(nullptr)},
      {"windows", s.windows_run},
      {"windows_merged", r.windows},
      {"stable", s.stable},
      {"over_latency_limit", s.over_latency_limit},
      {"duration_s", Round(absl::ToDoubleSeconds(r.duration), 0.001)},
      {"sent", r.sent},
      {"ok", r.ok},
      {"errors", r.errors},
      {"late_sends", r.late_sends},
      {"late_send_share",
       r.sent > 0 ? Round(static_cast<double>(r.late_sends) / r.sent, 1e-6)
                  : 0.0},
      {"requests_per_second", Round(r.RequestsPerSecond(), 0.01)},
      {"sent_per_second", Round(r.SentPerSecond(), 0.01)},
      {"tokens_per_second", Round(r.TokensPerSecond(), 0.01)},
      {"latency_us", LatencyJson(r.latency_ns)},
      {"latency_percentiles_us", curve},
      {"error_latency_us", LatencyJson(r.error_latency_ns)},
      {"send_lag_us",
       {{"p50", Round(QuantileUs(r.send_lag_ns, 0.5), 0.1)},
        {"p99", Round(QuantileUs(r.send_lag_ns, 0.99), 0.1)},
        {"max", Round(static_cast<double>(r.send_lag_ns.max()) / 1e3, 0.1)}}},
      {"status_counts", status},
      {"server_timing_us",
       {{"queue_mean", mean(r.sum_queue_us)},
        {"compute_mean", mean(r.sum_compute_us)},
        {"batch_requests_mean", mean(r.sum_batch_requests)}}},
  };
  return step;
}

json ConfigJson(const Report& report) {
  const Options& o = *report.options;
  auto ms = [](absl::Duration d) { return absl::ToDoubleMilliseconds(d); };
  std::string sweep;
  if (o.sweep.kind != SweepSpec::Kind::kNone) {
    sweep = o.sweep.kind == SweepSpec::Kind::kRate ? "rate=" : "concurrency=";
    for (size_t i = 0; i < o.sweep.values.size(); ++i) {
      if (i > 0) sweep += ",";
      json v = o.sweep.values[i];
      sweep += v.dump();
    }
  }
  return {{"target", o.target},
          {"model", o.model},
          {"version", o.version},
          {"d_model", report.d_model},
          {"dtype", DataTypeName(o.dtype)},
          {"seq", o.seq.text()},
          {"batch", o.batch},
          {"causal", o.causal.has_value() ? json(*o.causal) : json(nullptr)},
          {"key_len", o.key_len},
          {"rpc", RpcKindName(o.rpc)},
          {"connections", o.connections},
          {"arrival", ArrivalName(o.arrival)},
          {"max_inflight", o.max_inflight},
          {"duration_s", absl::ToDoubleSeconds(o.duration)},
          {"requests", o.requests},
          {"warmup_s", absl::ToDoubleSeconds(o.warmup)},
          {"deadline_ms", ms(o.deadline)},
          {"late_threshold_ms", ms(o.late_threshold)},
          {"errors_in_latency", o.errors_in_latency},
          {"sweep", sweep},
          {"stable_windows", o.EffectiveStableWindows()},
          {"max_windows", o.max_windows},
          {"stability_pct", o.stability_pct},
          {"latency_limit_ms", ms(o.latency_limit)},
          {"seed", o.seed}};
}

}  // namespace

std::string JsonText(const Report& report) {
  json steps = json::array();
  for (const StepResult& s : report.steps) steps.push_back(StepJson(s));
  json doc = {{"tool", "attn_loadgen"},
              {"schema_version", kJsonSchemaVersion},
              {"started_at", report.started_at},
              {"config", ConfigJson(report)},
              {"steps", steps},
              {"stopped_early", report.stopped_early}};
  return doc.dump(2) + "\n";
}

}  // namespace attn::loadgen
