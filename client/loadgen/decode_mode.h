// attn_loadgen's decode mode (--sessions N --context C, docs/loadgen.md):
// N virtual clients each start a session with a prefill of C random tokens,
// then stream one-token steps (AttendStream, the low-overhead path) for
// --duration or --decode_steps steps, one outstanding step per session as a
// decode loop has. Then the same clients send --recompute_requests
// stateless causal Attend calls over C tokens each: what every step would
// cost without the server's KV cache. The report compares the two rates.
//
// Thread-safety: RunDecode runs its own threads (one per session) and
// returns when they are joined; call it from one thread.
#ifndef ATTNSERVE_CLIENT_LOADGEN_DECODE_MODE_H_
#define ATTNSERVE_CLIENT_LOADGEN_DECODE_MODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/loadgen/channels.h"
#include "client/loadgen/options.h"

namespace attn::loadgen {

// One phase's calls: wall latencies and the server's timing.
struct DecodePhase {
  int64_t calls = 0;
  int64_t errors = 0;
  std::string first_error;
  double seconds = 0;               // wall time of the phase
  std::vector<int64_t> latency_ns;  // per successful call
  int64_t compute_us = 0;           // summed Timing.compute_us
  int64_t batch_requests = 0;       // summed Timing.batch_requests

  double CallsPerSecond() const { return seconds > 0 ? calls / seconds : 0; }
  // q in [0, 1]; 0 when there are no calls.
  double LatencyMs(double q) const;
};

struct DecodeReport {
  int sessions = 0;
  int64_t context = 0;
  int64_t d_model = 0;
  DecodePhase prefill;       // one call per session
  DecodePhase decode;        // one-token steps
  DecodePhase recompute;     // stateless causal Attend over `context` tokens
  int64_t final_length = 0;  // longest session at the end
};

// Runs the three phases and ends every session. Errors: only for a session
// that cannot be started (the message has the server's status); step and
// recompute errors are counted in the report.
absl::StatusOr<DecodeReport> RunDecode(const Options& options,
                                       std::vector<Connection>* connections,
                                       int64_t d_model);

// The human-readable summary printed on stdout.
std::string DecodeText(const DecodeReport& report);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_DECODE_MODE_H_
