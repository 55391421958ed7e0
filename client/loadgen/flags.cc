#include "client/loadgen/flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/loadgen/security_flags.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "gRPC target of the server (host:port, dns:///host:port, unix:path)");
ABSL_FLAG(int, connections, 1,
          "gRPC channels, each its own HTTP/2 connection; calls are spread "
          "round-robin over them");
ABSL_FLAG(std::string, model, "demo", "model name");
ABSL_FLAG(int64_t, version, 0, "model version (0 = newest)");
ABSL_FLAG(std::string, dtype, "float32",
          "wire dtype of the inputs: float32, bfloat16 or float16");
ABSL_FLAG(std::string, seq, "16",
          "query sequence lengths: 16 (fixed), 8:512 (uniform range) or "
          "16:0.7,128:0.3 (weighted list)");
ABSL_FLAG(int64_t, batch, 1, "batch items per request (B of [B, Sq, D])");
ABSL_FLAG(std::string, causal, "",
          "true or false; empty = the model's default");
ABSL_FLAG(int64_t, key_len, 0,
          "> 0: cross-attention with a key of this many positions");
ABSL_FLAG(int64_t, d_model, 0,
          "model width; 0 = ask the server (GetModel). Needed to load-test a "
          "model the server does not have (e.g. to measure NOT_FOUND)");
ABSL_FLAG(std::string, rpc, "unary",
          "unary (Attend) or stream (AttendStream, one stream per "
          "outstanding request)");
ABSL_FLAG(std::string, protocol, "attn",
          "attn (attn.v1 Attend), v2 (KServe v2 ModelInfer over gRPC on "
          "--target), http (KServe v2 REST on --http_target, binary tensor "
          "extension) or http_json (REST, tensors as JSON data)");
ABSL_FLAG(std::string, http_target, "127.0.0.1:8000",
          "host:port of attn_server's --http_port (--protocol=http|http_json)");
ABSL_FLAG(uint64_t, seed, 1, "seed of payloads, --seq sampling and Poisson");
ABSL_FLAG(int, concurrency, 1,
          "closed loop: requests kept outstanding (ignored with --rate)");
ABSL_FLAG(double, rate, 0,
          "> 0: open loop at this many requests/s, latency measured from the "
          "intended send time");
ABSL_FLAG(std::string, arrival, "constant",
          "open-loop arrivals: constant or poisson");
ABSL_FLAG(int, max_inflight, 1024,
          "open loop: most outstanding requests; later sends wait (and are "
          "counted late)");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10),
          "length of one measurement window");
ABSL_FLAG(int64_t, requests, 0,
          "> 0: a measurement window is this many sends instead of "
          "--duration");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(1),
          "load before each step's first window, not measured");
ABSL_FLAG(absl::Duration, deadline, absl::ZeroDuration(),
          "deadline of each unary call (0 = none)");
ABSL_FLAG(absl::Duration, late_threshold, absl::Milliseconds(1),
          "open loop: a send issued later than this after its intended time "
          "counts as late");
ABSL_FLAG(bool, errors_in_latency, false,
          "also record failed calls in the latency histogram");
ABSL_FLAG(std::string, sweep, "",
          "concurrency=1,2,4,... or rate=100,200,...: one step per value");
ABSL_FLAG(int, stable_windows, 0,
          "windows that must agree within --stability_pct (0 = 3 for sweeps, "
          "1 otherwise); the step reports their merge");
ABSL_FLAG(int, max_windows, 10, "most windows per step");
ABSL_FLAG(double, stability_pct, 10,
          "throughput and p99 of the last windows within this % of their "
          "mean");
ABSL_FLAG(absl::Duration, latency_limit, absl::ZeroDuration(),
          "stop the sweep after a step whose p99 exceeds this (0 = never)");
ABSL_FLAG(std::string, json, "", "write the JSON report to this file");
ABSL_FLAG(std::string, csv, "", "write the CSV report to this file");
ABSL_FLAG(std::string, html, "", "write the HTML report to this file");
ABSL_FLAG(int, sessions, 0,
          "decode mode: this many sessions, each a prefill of --context "
          "tokens then one-token steps on a stream (0 = off)");
ABSL_FLAG(int64_t, context, 128, "decode mode: prefill tokens per session");
ABSL_FLAG(int64_t, decode_steps, 0,
          "decode mode: steps per session (0 = for --duration)");
ABSL_FLAG(int, recompute_requests, 2,
          "decode mode: stateless causal calls over --context tokens per "
          "session, the cost of a step without the KV cache");
ABSL_FLAG(bool, quiet, false,
          "no progress line and no per-step lines on stderr");

namespace attn::loadgen {

absl::StatusOr<Options> OptionsFromFlags() {
  Options o;
  o.target = absl::GetFlag(FLAGS_target);
  o.connections = absl::GetFlag(FLAGS_connections);
  absl::StatusOr<ChannelSecurity> security = SecurityFromFlags();
  if (!security.ok()) return security.status();
  o.security = *std::move(security);
  o.model = absl::GetFlag(FLAGS_model);
  o.version = absl::GetFlag(FLAGS_version);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "float32") {
    o.dtype = v1::FLOAT32;
  } else if (dtype == "bfloat16") {
    o.dtype = v1::BFLOAT16;
  } else if (dtype == "float16") {
    o.dtype = v1::FLOAT16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dtype=", dtype, ": expected float32, bfloat16 or float16"));
  }
  auto seq = SeqSpec::Parse(absl::GetFlag(FLAGS_seq));
  if (!seq.ok()) return seq.status();
  o.seq = *seq;
  o.batch = absl::GetFlag(FLAGS_batch);
  const std::string causal = absl::GetFlag(FLAGS_causal);
  if (causal == "true") {
    o.causal = true;
  } else if (causal == "false") {
    o.causal = false;
  } else if (!causal.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--causal=", causal, ": expected true, false or empty"));
  }
  o.key_len = absl::GetFlag(FLAGS_key_len);
  o.d_model = absl::GetFlag(FLAGS_d_model);
  const std::string rpc = absl::GetFlag(FLAGS_rpc);
  if (rpc == "unary") {
    o.rpc = RpcKind::kUnary;
  } else if (rpc == "stream") {
    o.rpc = RpcKind::kStream;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--rpc=", rpc, ": expected unary or stream"));
  }
  const std::string protocol = absl::GetFlag(FLAGS_protocol);
  if (protocol == "attn") {
    o.protocol = WireProtocol::kAttn;
  } else if (protocol == "v2") {
    o.protocol = WireProtocol::kV2Grpc;
  } else if (protocol == "http") {
    o.protocol = WireProtocol::kHttpBinary;
  } else if (protocol == "http_json") {
    o.protocol = WireProtocol::kHttpJson;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--protocol=", protocol, ": expected attn, v2, http or http_json"));
  }
  o.http_target = absl::GetFlag(FLAGS_http_target);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.concurrency = absl::GetFlag(FLAGS_concurrency);
  o.rate = absl::GetFlag(FLAGS_rate);
  const std::string arrival = absl::GetFlag(FLAGS_arrival);
  if (arrival == "constant") {
    o.arrival = Arrival::kConstant;
  } else if (arrival == "poisson") {
    o.arrival = Arrival::kPoisson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--arrival=", arrival, ": expected constant or poisson"));
  }
  o.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  o.duration = absl::GetFlag(FLAGS_duration);
  o.requests = absl::GetFlag(FLAGS_requests);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  o.deadline = absl::GetFlag(FLAGS_deadline);
  o.late_threshold = absl::GetFlag(FLAGS_late_threshold);
  o.errors_in_latency = absl::GetFlag(FLAGS_errors_in_latency);
  auto sweep = SweepSpec::Parse(absl::GetFlag(FLAGS_sweep));
  if (!sweep.ok()) return sweep.status();
  o.sweep = *sweep;
  o.stable_windows = absl::GetFlag(FLAGS_stable_windows);
  o.max_windows = absl::GetFlag(FLAGS_max_windows);
  o.stability_pct = absl::GetFlag(FLAGS_stability_pct);
  o.latency_limit = absl::GetFlag(FLAGS_latency_limit);
  o.json_path = absl::GetFlag(FLAGS_json);
  o.csv_path = absl::GetFlag(FLAGS_csv);
  o.html_path = absl::GetFlag(FLAGS_html);
  o.quiet = absl::GetFlag(FLAGS_quiet);
  o.sessions = absl::GetFlag(FLAGS_sessions);
  o.context = absl::GetFlag(FLAGS_context);
  o.decode_steps = absl::GetFlag(FLAGS_decode_steps);
  o.recompute_requests = absl::GetFlag(FLAGS_recompute_requests);
  if (absl::Status s = o.Validate(); !s.ok()) return s;
  return o;
}

}  // namespace attn::loadgen
