// Shared pieces of the report writers.
#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/loadgen/report.h"

namespace attn::loadgen {

std::string StatusCodeName(int code) {
  // gRPC's code space is absl's, and absl names the codes as gRPC does.
  if (code < 0 || code >= kNumStatusCodes) return "UNKNOWN";
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

double QuantileUs(const LatencyHistogram& h, double q) {
  return static_cast<double>(h.Quantile(q)) / 1e3;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) out << text;
  out.close();
  if (!out) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace attn::loadgen
