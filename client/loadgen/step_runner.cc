#include "client/loadgen/step_runner.h"

#include <memory>

#include "absl/time/clock.h"
#include "client/loadgen/load_driver.h"
#include "client/loadgen/recorder.h"
#include "client/loadgen/stability.h"

namespace attn::loadgen {
namespace {

// How long a closed window may wait for its last responses before the step
// is cut short (and the stragglers cancelled).
absl::Duration DrainTimeout(const Options& options) {
  if (options.deadline > absl::ZeroDuration()) {
    return options.deadline + absl::Seconds(5);
  }
  return absl::Seconds(30);
}

}  // namespace

StepResult RunStep(const LoadLevel& level, const Options& options,
                   std::vector<Connection>* connections,
                   const PayloadSet& payloads, ProgressLine* progress,
                   const std::string& label) {
  auto recorder = std::make_shared<Recorder>(options.errors_in_latency);
  std::unique_ptr<LoadDriver> driver =
      MakeLoadDriver(level, options, connections, payloads, recorder.get());
  const int k = options.EffectiveStableWindows();
  const absl::Duration drain = DrainTimeout(options);

  progress->Set(label + " warmup", recorder);
  driver->Start();
  if (options.warmup > absl::ZeroDuration()) absl::SleepFor(options.warmup);
  recorder->Rotate(options.requests);  // discards the warm-up window

  StepResult step;
  step.level = level;
  std::vector<WindowResult> windows;
  bool stopped = false;
  for (int i = 0; i < options.max_windows && !stopped; ++i) {
    progress->Set(label + " window " + std::to_string(i + 1), recorder);
    std::shared_ptr<Window> window;
    if (options.requests > 0) {
      window = recorder->WaitFull(absl::InfiniteFuture());
    } else {
      absl::SleepFor(options.duration);
      window = recorder->Rotate(0);
    }
    // The last window of the step: stop sending now rather than feed a
    // window that would be discarded.
    const bool last = i + 1 == options.max_windows;
    if (last) {
      driver->Stop(drain);
      stopped = true;
    }
    if (!window->WaitDrained(absl::Now() + drain)) {
      driver->Stop(absl::ZeroDuration());  // cancels the stragglers
      stopped = true;
      window->WaitDrained(absl::InfiniteFuture());
    }
    windows.push_back(window->Snapshot());
    if (WindowsStable(windows, k, options.stability_pct)) {
      step.stable = true;
      break;
    }
  }
  if (!stopped) driver->Stop(drain);
  progress->Set(label, nullptr);
  progress->Clear();
  step.windows_run = static_cast<int>(windows.size());
  step.result = MergeLast(windows, k);
  if (options.latency_limit > absl::ZeroDuration()) {
    step.over_latency_limit = step.result.latency_ns.Quantile(0.99) >
                              absl::ToInt64Nanoseconds(options.latency_limit);
  }
  return step;
}

}  // namespace attn::loadgen
