// Options of one attn_loadgen run, and the load steps they describe.
//
// Options are plain data filled from the command line (flags.h) and checked
// by Validate(); everything downstream reads them only.
#ifndef ATTNSERVE_CLIENT_LOADGEN_OPTIONS_H_
#define ATTNSERVE_CLIENT_LOADGEN_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "attn/v1/attention.pb.h"
#include "client/channel_credentials.h"
#include "client/loadgen/arrival_schedule.h"
#include "client/loadgen/seq_spec.h"

namespace attn::loadgen {

enum class RpcKind { kUnary, kStream };

// --protocol: attn.v1, KServe v2 over gRPC, or KServe v2 REST with binary
// tensors or JSON data.
enum class WireProtocol { kAttn, kV2Grpc, kHttpBinary, kHttpJson };

// One measured load level: closed loop at `concurrency` outstanding
// requests, or open loop at `rate` requests/s.
struct LoadLevel {
  bool open_loop = false;
  int concurrency = 0;  // closed loop only
  double rate = 0;      // open loop only
  // "concurrency=4" or "rate=200".
  std::string Label() const;
};

// --sweep=concurrency=1,2,4 or --sweep=rate=100,200.
struct SweepSpec {
  enum class Kind { kNone, kConcurrency, kRate };
  Kind kind = Kind::kNone;
  std::vector<double> values;
  // Errors: INVALID_ARGUMENT for another key, an empty list or a value that
  // is not positive (concurrency must be an integer).
  static absl::StatusOr<SweepSpec> Parse(absl::string_view text);
};

struct Options {
  // --- where and what ---
  std::string target = "127.0.0.1:50051";
  int connections = 1;       // gRPC channels (each its own HTTP/2 connection)
  ChannelSecurity security;  // --tls_*, --auth_token_file
  std::string model = "demo";
  int64_t version = 0;
  v1::DataType dtype = v1::FLOAT32;
  SeqSpec seq = *SeqSpec::Parse("16");
  int64_t batch = 1;
  std::optional<bool> causal;  // unset: the model's default
  int64_t key_len = 0;         // > 0: cross-attention with Sk = key_len
  int64_t d_model = 0;         // 0: asked from the server (GetModel)
  RpcKind rpc = RpcKind::kUnary;
  WireProtocol protocol = WireProtocol::kAttn;
  std::string http_target = "127.0.0.1:8000";  // --protocol=http|http_json
  uint64_t seed = 1;

  // --- load shape ---
  int concurrency = 1;  // closed loop (when rate == 0)
  double rate = 0;      // > 0: open loop, requests/s
  Arrival arrival = Arrival::kConstant;
  // Open loop: most requests outstanding at once; a send beyond it waits
  // (and is then late).
  int max_inflight = 1024;
  absl::Duration duration = absl::Seconds(10);  // one measurement window
  int64_t requests = 0;  // > 0: a window is this many sends instead
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration deadline = absl::ZeroDuration();  // 0: none (unary only)
  // Open loop: a send issued more than this after its intended time is late.
  absl::Duration late_threshold = absl::Milliseconds(1);
  bool errors_in_latency = false;

  // --- decode mode (decode_mode.h) ---
  int sessions = 0;            // > 0: decode mode with this many sessions
  int64_t context = 128;       // prefill tokens of each session
  int64_t decode_steps = 0;    // > 0: steps per session instead of duration
  int recompute_requests = 2;  // stateless full-prefix calls per session

  // --- sweep and stability ---
  SweepSpec sweep;
  int stable_windows = 0;  // 0: 3 for sweeps, 1 otherwise
  int max_windows = 10;
  double stability_pct = 10;
  absl::Duration latency_limit = absl::ZeroDuration();  // 0: none

  // --- outputs ---
  std::string json_path;
  std::string csv_path;
  std::string html_path;
  bool quiet = false;  // no progress line, no per-step lines on stderr

  // Errors: INVALID_ARGUMENT with the flag to fix.
  absl::Status Validate() const;
  // The load levels to measure, in order (one without --sweep).
  std::vector<LoadLevel> Levels() const;
  // stable_windows with its default applied.
  int EffectiveStableWindows() const;
};

const char* RpcKindName(RpcKind kind);
// "attn", "v2", "http", "http_json".
const char* WireProtocolName(WireProtocol protocol);
const char* ArrivalName(Arrival arrival);
const char* DataTypeName(v1::DataType dtype);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_OPTIONS_H_
