#include "client/loadgen/stability.h"

#include <algorithm>
#include <cmath>

namespace attn::loadgen {
namespace {

bool WithinOfMean(const std::vector<double>& values, double pct) {
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  for (double v : values) {
    if (std::fabs(v - mean) > mean * pct / 100.0) return false;
  }
  return true;
}

}  // namespace

bool WindowsStable(const std::vector<WindowResult>& windows, int k,
                   double pct) {
  if (windows.empty() || static_cast<int>(windows.size()) < k) return false;
  if (k <= 1) return true;
  std::vector<double> throughput;
  std::vector<double> p99;
  for (size_t i = windows.size() - k; i < windows.size(); ++i) {
    throughput.push_back(windows[i].RequestsPerSecond());
    p99.push_back(static_cast<double>(windows[i].latency_ns.Quantile(0.99)));
  }
  return WithinOfMean(throughput, pct) && WithinOfMean(p99, pct);
}

WindowResult MergeLast(const std::vector<WindowResult>& windows, int k) {
  WindowResult merged;
  const size_t n = std::min<size_t>(std::max(k, 1), windows.size());
  for (size_t i = windows.size() - n; i < windows.size(); ++i) {
    merged.Merge(windows[i]);
  }
  return merged;
}

}  // namespace attn::loadgen
