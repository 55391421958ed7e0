#include "client/loadgen/options.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attn::loadgen {

std::string LoadLevel::Label() const {
  if (open_loop) return absl::StrCat("rate=", rate);
  return absl::StrCat("concurrency=", concurrency);
}

absl::StatusOr<SweepSpec> SweepSpec::Parse(absl::string_view text) {
  SweepSpec spec;
  if (text.empty()) return spec;
  const std::vector<absl::string_view> kv = absl::StrSplit(text, '=');
  if (kv.size() != 2 || (kv[0] != "concurrency" && kv[0] != "rate")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sweep=", text,
                     ": expected concurrency=1,2,4,... or rate=100,200,..."));
  }
  spec.kind = kv[0] == "rate" ? Kind::kRate : Kind::kConcurrency;
  for (absl::string_view part : absl::StrSplit(kv[1], ',')) {
    double v = 0;
    if (!absl::SimpleAtod(part, &v) || !(v > 0) || !std::isfinite(v) ||
        (spec.kind == Kind::kConcurrency && v != std::floor(v))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--sweep=", text, ": '", part, "' is not a positive ",
          spec.kind == Kind::kRate ? "rate" : "integer concurrency"));
    }
    spec.values.push_back(v);
  }
  return spec;
}

absl::Status Options::Validate() const {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(parts...));
  };
  if (target.empty()) return bad("--target is empty");
  if (connections < 1) return bad("--connections must be >= 1");
  if (model.empty()) return bad("--model is empty");
  if (version < 0) return bad("--version must be >= 0");
  if (batch < 1) return bad("--batch must be >= 1");
  if (key_len < 0) return bad("--key_len must be >= 0");
  if (d_model < 0) return bad("--d_model must be >= 0");
  if (sessions < 0) return bad("--sessions must be >= 0 (0 = no decode mode)");
  if (sessions > 0 && context < 1) return bad("--context must be >= 1");
  if (decode_steps < 0) return bad("--decode_steps must be >= 0");
  if (recompute_requests < 0) return bad("--recompute_requests must be >= 0");
  if (concurrency < 1) return bad("--concurrency must be >= 1");
  if (rate < 0 || !std::isfinite(rate)) return bad("--rate must be >= 0");
  if (max_inflight < 1) return bad("--max_inflight must be >= 1");
  if (requests < 0) return bad("--requests must be >= 0");
  if (requests == 0 && duration <= absl::ZeroDuration()) {
    return bad("--duration must be > 0 (or give --requests)");
  }
  if (warmup < absl::ZeroDuration()) return bad("--warmup must be >= 0");
  if (deadline < absl::ZeroDuration()) return bad("--deadline must be >= 0");
  if (rpc == RpcKind::kStream && deadline > absl::ZeroDuration()) {
    return bad(
        "--deadline applies to unary calls only: an AttendStream deadline "
        "would end the whole stream (use --rpc=unary)");
  }
  if (protocol != WireProtocol::kAttn && rpc == RpcKind::kStream) {
    return bad("--rpc=stream is attn.v1's AttendStream; --protocol=",
               WireProtocolName(protocol), " sends unary requests");
  }
  if ((protocol == WireProtocol::kHttpBinary ||
       protocol == WireProtocol::kHttpJson) &&
      deadline > absl::ZeroDuration()) {
    return bad("--deadline is not sent over REST (--protocol=",
               WireProtocolName(protocol), ")");
  }
  if (late_threshold <= absl::ZeroDuration()) {
    return bad("--late_threshold must be > 0");
  }
  if (stable_windows < 0) return bad("--stable_windows must be >= 0");
  if (max_windows < 1) return bad("--max_windows must be >= 1");
  if (EffectiveStableWindows() > max_windows) {
    return bad("--stable_windows (", EffectiveStableWindows(),
               ") must be <= --max_windows (", max_windows, ")");
  }
  if (!(stability_pct > 0)) return bad("--stability_pct must be > 0");
  if (latency_limit < absl::ZeroDuration()) {
    return bad("--latency_limit must be >= 0");
  }
  if (sweep.kind == SweepSpec::Kind::kConcurrency && rate > 0) {
    return bad("--sweep=concurrency=... is closed loop: drop --rate");
  }
  return absl::OkStatus();
}

std::vector<LoadLevel> Options::Levels() const {
  std::vector<LoadLevel> levels;
  switch (sweep.kind) {
    case SweepSpec::Kind::kNone:
      levels.push_back({rate > 0, concurrency, rate});
      break;
    case SweepSpec::Kind::kConcurrency:
      for (double v : sweep.values) {
        levels.push_back({false, static_cast<int>(v), 0});
      }
      break;
    case SweepSpec::Kind::kRate:
      for (double v : sweep.values) levels.push_back({true, 0, v});
      break;
  }
  return levels;
}

int Options::EffectiveStableWindows() const {
  if (stable_windows > 0) return stable_windows;
  return sweep.kind == SweepSpec::Kind::kNone ? 1 : 3;
}

const char* WireProtocolName(WireProtocol protocol) {
  switch (protocol) {
    case WireProtocol::kV2Grpc:
      return "v2";
    case WireProtocol::kHttpBinary:
      return "http";
    case WireProtocol::kHttpJson:
      return "http_json";
    default:
      return "attn";
  }
}

const char* RpcKindName(RpcKind kind) {
  return kind == RpcKind::kStream ? "stream" : "unary";
}

const char* ArrivalName(Arrival arrival) {
  return arrival == Arrival::kPoisson ? "poisson" : "constant";
}

const char* DataTypeName(v1::DataType dtype) {
  switch (dtype) {
    case v1::BFLOAT16:
      return "bfloat16";
    case v1::FLOAT16:
      return "float16";
    default:
      return "float32";
  }
}

}  // namespace attn::loadgen
