// The stability rule of attn_loadgen's measurement windows, after Triton's
// perf_analyzer: a load step is stable when, over its last `k` windows, the
// throughput (OK responses/s) and the p99 latency each stay within `pct`
// percent of their mean over those windows.
#ifndef ATTNSERVE_CLIENT_LOADGEN_STABILITY_H_
#define ATTNSERVE_CLIENT_LOADGEN_STABILITY_H_

#include <vector>

#include "client/loadgen/window.h"

namespace attn::loadgen {

// False with fewer than k windows; true for k <= 1 with at least one.
bool WindowsStable(const std::vector<WindowResult>& windows, int k, double pct);

// The merge of the last min(k, size) windows.
WindowResult MergeLast(const std::vector<WindowResult>& windows, int k);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_STABILITY_H_
