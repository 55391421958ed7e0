// The outputs of an attn_loadgen run: a human-readable table, JSON (the
// documented schema in docs/loadgen.md), CSV (one row per step) and a
// self-contained HTML report with inline SVG charts.
//
// All functions are pure (they format a Report); WriteTextFile does I/O.
#ifndef ATTNSERVE_CLIENT_LOADGEN_REPORT_H_
#define ATTNSERVE_CLIENT_LOADGEN_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/loadgen/options.h"
#include "client/loadgen/step_runner.h"

namespace attn::loadgen {

struct Report {
  const Options* options = nullptr;  // REQUIRES: not null
  int64_t d_model = 0;
  std::string started_at;  // RFC 3339, UTC
  std::vector<StepResult> steps;
  // Why the sweep ended before its last step ("" if it did not).
  std::string stopped_early;
};

// The JSON schema version written as "schema_version".
constexpr int kJsonSchemaVersion = 1;

// "OK", "NOT_FOUND", ... for grpc::StatusCode values 0..16.
std::string StatusCodeName(int code);

std::string TableText(const Report& report);
std::string JsonText(const Report& report);
std::string CsvText(const Report& report);
std::string HtmlText(const Report& report);

// Errors: UNAVAILABLE naming the file when it cannot be written.
absl::Status WriteTextFile(const std::string& path, const std::string& text);

// Latency figures in microseconds (from the ns histogram).
double QuantileUs(const LatencyHistogram& h, double q);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_REPORT_H_
