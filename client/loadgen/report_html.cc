// The self-contained HTML report: summary table, latency percentiles vs
// throughput (the sweep chart) and the latency distribution of each step.
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/loadgen/report.h"
#include "client/loadgen/svg_chart.h"

namespace attn::loadgen {
namespace {

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                "#9467bd", "#8c564b", "#e377c2", "#17becf",
                                "#7f7f7f", "#bcbd22"};
constexpr int kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

constexpr char kStyle[] = R"(<style>
body{font-family:sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}
.meta{color:#555;margin-bottom:16px}
table{border-collapse:collapse;margin:12px 0 24px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}
th{background:#f0f4f8}
td.l,th.l{text-align:left}
.bad{color:#b00020;font-weight:bold}
svg{display:block;margin:8px 0 24px;border:1px solid #e5e5e5}
</style>
)";

std::string ThroughputChart(const Report& report) {
  ChartSpec spec;
  spec.title = "Latency percentiles vs throughput";
  spec.x_label = "throughput (OK responses/s)";
  spec.y_label = "latency (ms)";
  const std::pair<double, const char*> percentiles[] = {
      {0.5, "p50"}, {0.9, "p90"}, {0.99, "p99"}};
  int color = 0;
  for (const auto& [q, name] : percentiles) {
    ChartSeries s{name, kPalette[color++ % kPaletteSize], {}};
    for (const StepResult& step : report.steps) {
      s.points.emplace_back(step.result.RequestsPerSecond(),
                            QuantileUs(step.result.latency_ns, q) / 1e3);
    }
    spec.series.push_back(std::move(s));
  }
  return SvgLineChart(spec);
}

std::string DistributionChart(const Report& report) {
  ChartSpec spec;
  spec.title = "Latency distribution (percentile spectrum)";
  spec.x_label = "percentile";
  spec.y_label = "latency (ms)";
  spec.x_ticks = {
      {0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}};
  int color = 0;
  for (const StepResult& step : report.steps) {
    ChartSeries s{step.level.Label(), kPalette[color++ % kPaletteSize], {}};
    for (double p :
         {0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99}) {
      s.points.emplace_back(-std::log10(1 - p / 100),
                            QuantileUs(step.result.latency_ns, p / 100) / 1e3);
    }
    spec.series.push_back(std::move(s));
  }
  return SvgLineChart(spec);
}

std::string StepTable(const Report& report) {
  std::string t =
      "<table><tr><th class=l>step</th><th>req/s</th><th>tokens/s</th>"
      "<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th>"
      "<th>max ms</th><th>sent</th><th>errors</th><th>late sends</th>"
      "<th>server queue / compute µs</th><th class=l>status codes</th>"
      "<th>windows</th></tr>\n";
  for (const StepResult& s : report.steps) {
    const WindowResult& r = s.result;
    const double ok = r.ok > 0 ? static_cast<double>(r.ok) : 1.0;
    std::string status;
    for (int c = 0; c < kNumStatusCodes; ++c) {
      if (r.status_counts[c] != 0) {
        absl::StrAppend(&status, status.empty() ? "" : ", ", StatusCodeName(c),
                        "=", r.status_counts[c]);
      }
    }
    const double late =
        r.sent > 0 ? 100.0 * static_cast<double>(r.late_sends) / r.sent : 0;
    absl::StrAppendFormat(
        &t,
        "<tr><td class=l>%s</td><td>%.1f</td><td>%.0f</td><td>%.3f</td>"
        "<td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%d</td>"
        "<td%s>%d</td><td>%d (%.2f%%)</td><td>%.0f / %.0f</td>"
        "<td class=l>%s</td><td>%d%s</td></tr>\n",
        HtmlEscape(s.level.Label()), r.RequestsPerSecond(), r.TokensPerSecond(),
        QuantileUs(r.latency_ns, 0.5) / 1e3,
        QuantileUs(r.latency_ns, 0.9) / 1e3,
        QuantileUs(r.latency_ns, 0.99) / 1e3,
        QuantileUs(r.latency_ns, 0.999) / 1e3,
        static_cast<double>(r.latency_ns.max()) / 1e6, r.sent,
        r.errors > 0 ? " class=bad" : "", r.errors, r.late_sends, late,
        static_cast<double>(r.sum_queue_us) / ok,
        static_cast<double>(r.sum_compute_us) / ok, HtmlEscape(status),
        s.windows_run, s.stable ? "" : " (unstable)");
  }
  t += "</table>\n";
  return t;
}

}  // namespace

std::string HtmlText(const Report& report) {
  const Options& o = *report.options;
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>attn_loadgen report</title>\n";
  html += kStyle;
  html += "</head><body>\n<h1>attn_loadgen report</h1>\n";
  absl::StrAppendFormat(
      &html,
      "<div class=meta>%s &middot; target %s &middot; model %s (d_model %d) "
      "&middot; seq %s &middot; batch %d &middot; dtype %s &middot; rpc %s "
      "&middot; connections %d &middot; arrival %s</div>\n",
      HtmlEscape(report.started_at), HtmlEscape(o.target), HtmlEscape(o.model),
      report.d_model, HtmlEscape(o.seq.text()), o.batch, DataTypeName(o.dtype),
      RpcKindName(o.rpc), o.connections, ArrivalName(o.arrival));
  html += StepTable(report);
  if (!report.stopped_early.empty()) {
    absl::StrAppend(&html, "<p class=bad>Sweep stopped early: ",
                    HtmlEscape(report.stopped_early), "</p>\n");
  }
  html += ThroughputChart(report);
  html += DistributionChart(report);
  html +=
      "<p class=meta>Latency is measured from the intended send time in open "
      "loop (coordinated-omission corrected). Figures are merged over each "
      "step's last stable windows.</p>\n</body></html>\n";
  return html;
}

}  // namespace attn::loadgen
