// The human-readable table printed on stdout.
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/loadgen/report.h"

namespace attn::loadgen {
namespace {

std::string StatusSummary(const WindowResult& r) {
  std::vector<std::string> parts;
  for (int c = 0; c < kNumStatusCodes; ++c) {
    if (r.status_counts[c] != 0) {
      parts.push_back(absl::StrCat(StatusCodeName(c), "=", r.status_counts[c]));
    }
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, " ");
}

}  // namespace

std::string TableText(const Report& report) {
  const Options& o = *report.options;
  std::string out = absl::StrFormat(
      "attn_loadgen  target=%s  model=%s (d_model %d)  seq=%s  batch=%d  "
      "dtype=%s  rpc=%s  connections=%d\n",
      o.target, o.model, report.d_model, o.seq.text(), o.batch,
      DataTypeName(o.dtype), RpcKindName(o.rpc), o.connections);
  if (o.protocol != WireProtocol::kAttn) {
    out.insert(out.size() - 1,
               absl::StrCat("  protocol=", WireProtocolName(o.protocol)));
  }
  absl::StrAppendFormat(
      &out, "%-18s %10s %11s %9s %9s %9s %9s %9s %8s %7s %6s %15s %s\n", "step",
      "req/s", "tokens/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
      "sent", "errors", "late%", "srv queue/comp", "windows");
  for (const StepResult& s : report.steps) {
    const WindowResult& r = s.result;
    const double ok = r.ok > 0 ? static_cast<double>(r.ok) : 1.0;
    const double late =
        r.sent > 0 ? 100.0 * static_cast<double>(r.late_sends) / r.sent : 0.0;
    absl::StrAppendFormat(
        &out,
        "%-18s %10.1f %11.0f %9.3f %9.3f %9.3f %9.3f %9.3f %8d %7d %6.2f "
        "%7.0f/%-7.0f %d%s%s\n",
        s.level.Label(), r.RequestsPerSecond(), r.TokensPerSecond(),
        QuantileUs(r.latency_ns, 0.5) / 1e3,
        QuantileUs(r.latency_ns, 0.9) / 1e3,
        QuantileUs(r.latency_ns, 0.99) / 1e3,
        QuantileUs(r.latency_ns, 0.999) / 1e3,
        static_cast<double>(r.latency_ns.max()) / 1e6, r.sent, r.errors, late,
        static_cast<double>(r.sum_queue_us) / ok,
        static_cast<double>(r.sum_compute_us) / ok, s.windows_run,
        s.stable ? "" : " (unstable)",
        s.over_latency_limit ? " (over latency limit)" : "");
  }
  for (const StepResult& s : report.steps) {
    absl::StrAppend(&out, "status ", s.level.Label(), ": ",
                    StatusSummary(s.result), "\n");
  }
  if (!report.stopped_early.empty()) {
    absl::StrAppend(&out, "sweep stopped early: ", report.stopped_early, "\n");
  }
  return out;
}

}  // namespace attn::loadgen
