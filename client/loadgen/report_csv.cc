// The CSV report: a header and one row per step.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/loadgen/report.h"

namespace attn::loadgen {

std::string CsvText(const Report& report) {
  std::string out =
      "label,mode,concurrency,target_rate,windows,stable,duration_s,sent,ok,"
      "errors,late_sends,late_send_share,requests_per_second,sent_per_second,"
      "tokens_per_second,latency_min_us,latency_mean_us,latency_p50_us,"
      "latency_p90_us,latency_p95_us,latency_p99_us,latency_p999_us,"
      "latency_max_us,server_queue_mean_us,server_compute_mean_us,"
      "status_counts\n";
  for (const StepResult& s : report.steps) {
    const WindowResult& r = s.result;
    const LatencyHistogram& h = r.latency_ns;
    const double ok = r.ok > 0 ? static_cast<double>(r.ok) : 1.0;
    std::vector<std::string> status;
    for (int c = 0; c < kNumStatusCodes; ++c) {
      if (r.status_counts[c] != 0) {
        status.push_back(
            absl::StrCat(StatusCodeName(c), "=", r.status_counts[c]));
      }
    }
    absl::StrAppendFormat(
        &out,
        "%s,%s,%s,%s,%d,%s,%.3f,%d,%d,%d,%d,%.6f,%.2f,%.2f,%.2f,%.1f,%.1f,"
        "%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%s\n",
        s.level.Label(), s.level.open_loop ? "open_loop" : "closed_loop",
        s.level.open_loop ? "" : absl::StrCat(s.level.concurrency),
        s.level.open_loop ? absl::StrCat(s.level.rate) : "", s.windows_run,
        s.stable ? "true" : "false", absl::ToDoubleSeconds(r.duration), r.sent,
        r.ok, r.errors, r.late_sends,
        r.sent > 0 ? static_cast<double>(r.late_sends) / r.sent : 0.0,
        r.RequestsPerSecond(), r.SentPerSecond(), r.TokensPerSecond(),
        static_cast<double>(h.min()) / 1e3, h.mean() / 1e3, QuantileUs(h, 0.5),
        QuantileUs(h, 0.9), QuantileUs(h, 0.95), QuantileUs(h, 0.99),
        QuantileUs(h, 0.999), static_cast<double>(h.max()) / 1e3,
        static_cast<double>(r.sum_queue_us) / ok,
        static_cast<double>(r.sum_compute_us) / ok, absl::StrJoin(status, ";"));
  }
  return out;
}

}  // namespace attn::loadgen
