// RunStep: measures one load level: warm-up, then contiguous measurement
// windows (--duration each, or --requests sends each) until the last
// --stable_windows agree (stability.h) or --max_windows were run.
//
// Blocking; runs the load on gRPC threads (and an open-loop scheduler
// thread). Every request sent during the step has completed on return.
#ifndef ATTNSERVE_CLIENT_LOADGEN_STEP_RUNNER_H_
#define ATTNSERVE_CLIENT_LOADGEN_STEP_RUNNER_H_

#include <string>
#include <vector>

#include "client/loadgen/channels.h"
#include "client/loadgen/options.h"
#include "client/loadgen/payloads.h"
#include "client/loadgen/progress.h"
#include "client/loadgen/window.h"

namespace attn::loadgen {

struct StepResult {
  LoadLevel level;
  // The merge of the last stable_windows windows (the step's figures).
  WindowResult result;
  int windows_run = 0;
  bool stable = false;
  bool over_latency_limit = false;
};

// `progress` may be disabled; `label` prefixes its line.
StepResult RunStep(const LoadLevel& level, const Options& options,
                   std::vector<Connection>* connections,
                   const PayloadSet& payloads, ProgressLine* progress,
                   const std::string& label);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_STEP_RUNNER_H_
