#include "client/loadgen/decode_mode.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/tensor_convert.h"

namespace attn::loadgen {
namespace {

constexpr absl::Duration kCallTimeout = absl::Seconds(300);

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
}

// Rows of random tokens in [-1, 1), as the wire dtype.
v1::Tensor Tokens(std::mt19937* rng, int64_t rows, int64_t d_model,
                  v1::DataType dtype) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * d_model));
  for (float& x : v) x = dist(*rng);
  return *MakeTensor(v, {rows, d_model}, dtype);
}

struct Session {
  std::string id;
  Connection* connection = nullptr;
  std::mt19937 rng;
  int64_t length = 0;
  DecodePhase phase;  // this session's part of the current phase
};

void Record(DecodePhase* phase, const grpc::Status& status,
            const v1::AttendResponse& response, absl::Duration took) {
  ++phase->calls;
  if (!status.ok()) {
    ++phase->errors;
    if (phase->first_error.empty()) {
      phase->first_error =
          absl::StrCat(status.error_code(), ": ", status.error_message());
    }
    return;
  }
  phase->latency_ns.push_back(absl::ToInt64Nanoseconds(took));
  phase->compute_us += response.timing().compute_us();
  phase->batch_requests += response.timing().batch_requests();
}

void Merge(DecodePhase* into, DecodePhase* from) {
  into->calls += from->calls;
  into->errors += from->errors;
  if (into->first_error.empty()) into->first_error = from->first_error;
  into->latency_ns.insert(into->latency_ns.end(), from->latency_ns.begin(),
                          from->latency_ns.end());
  into->compute_us += from->compute_us;
  into->batch_requests += from->batch_requests;
  *from = DecodePhase();
}

// Runs `body` on one thread per session; returns the wall seconds and
// merges the sessions' phases into `out`.
template <typename Body>
void RunPhase(std::vector<Session>* sessions, DecodePhase* out, Body body) {
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (Session& s : *sessions) threads.emplace_back([&s, &body] { body(s); });
  for (std::thread& t : threads) t.join();
  out->seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (Session& s : *sessions) Merge(out, &s.phase);
}

v1::AttendRequest StepRequest(const Options& o, const Session& s,
                              v1::Tensor tokens, bool start) {
  v1::AttendRequest request;
  request.set_model(o.model);
  request.set_version(o.version);
  *request.mutable_query() = std::move(tokens);
  request.set_session_id(s.id);
  request.set_session_start(start);
  request.set_session_position(s.length);
  return request;
}

}  // namespace

double DecodePhase::LatencyMs(double q) const {
  if (latency_ns.empty()) return 0;
  std::vector<int64_t> sorted = latency_ns;
  std::sort(sorted.begin(), sorted.end());
  const size_t i = std::min(sorted.size() - 1,
                            static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return sorted[i] / 1e6;
}

absl::StatusOr<DecodeReport> RunDecode(const Options& o,
                                       std::vector<Connection>* connections,
                                       int64_t d_model) {
  DecodeReport report;
  report.sessions = o.sessions;
  report.context = o.context;
  report.d_model = d_model;
  std::vector<Session> sessions(static_cast<size_t>(o.sessions));
  for (int i = 0; i < o.sessions; ++i) {
    Session& s = sessions[i];
    s.id = absl::StrCat("attn_loadgen-", getpid(), "-", i);
    s.connection = &(*connections)[i % connections->size()];
    s.rng.seed(static_cast<uint32_t>(o.seed + i));
  }

  // 1. Prefill: every session starts with `context` tokens.
  RunPhase(&sessions, &report.prefill, [&](Session& s) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AttendResponse response;
    const absl::Time t0 = absl::Now();
    const grpc::Status status = s.connection->stub->Attend(
        &context,
        StepRequest(o, s, Tokens(&s.rng, o.context, d_model, o.dtype), true),
        &response);
    Record(&s.phase, status, response, absl::Now() - t0);
    if (status.ok()) s.length = response.session_length();
  });
  if (report.prefill.errors > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(report.prefill.errors, " of ", o.sessions,
                     " sessions could not start (", report.prefill.first_error,
                     "); lower --sessions or --context, or raise the server's "
                     "--kv_cache_bytes / sessions.max_sessions"));
  }

  // 2. Decode: one-token steps on one stream per session.
  const absl::Time until = absl::Now() + o.duration;
  RunPhase(&sessions, &report.decode, [&](Session& s) {
    grpc::ClientContext context;
    SetDeadline(&context);
    auto stream = s.connection->stub->AttendStream(&context);
    for (int64_t step = 0;
         o.decode_steps > 0 ? step < o.decode_steps : absl::Now() < until;
         ++step) {
      const absl::Time t0 = absl::Now();
      v1::AttendStreamResponse answer;
      if (!stream->Write(
              StepRequest(o, s, Tokens(&s.rng, 1, d_model, o.dtype), false)) ||
          !stream->Read(&answer)) {
        break;
      }
      const grpc::Status status =
          answer.has_error() && answer.error().code() != 0
              ? grpc::Status(
                    static_cast<grpc::StatusCode>(answer.error().code()),
                    answer.error().message())
              : grpc::Status::OK;
      Record(&s.phase, status, answer.response(), absl::Now() - t0);
      if (!status.ok()) break;  // the session's position is unknown now
      s.length = answer.response().session_length();
    }
    stream->WritesDone();
    const grpc::Status done = stream->Finish();
    if (!done.ok()) Record(&s.phase, done, v1::AttendResponse(), {});
  });

  // 3. Recompute: what a step costs without the cache.
  RunPhase(&sessions, &report.recompute, [&](Session& s) {
    for (int i = 0; i < o.recompute_requests; ++i) {
      v1::AttendRequest request;
      request.set_model(o.model);
      request.set_version(o.version);
      request.set_causal(true);
      *request.mutable_query() = Tokens(&s.rng, o.context, d_model, o.dtype);
      grpc::ClientContext context;
      SetDeadline(&context);
      v1::AttendResponse response;
      const absl::Time t0 = absl::Now();
      const grpc::Status status =
          s.connection->stub->Attend(&context, request, &response);
      Record(&s.phase, status, response, absl::Now() - t0);
    }
  });

  for (Session& s : sessions) {
    report.final_length = std::max(report.final_length, s.length);
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::EndSessionRequest request;
    request.set_model(o.model);
    request.set_version(o.version);
    request.set_session_id(s.id);
    v1::EndSessionResponse response;
    s.connection->stub->EndSession(&context, request, &response);
  }
  return report;
}

std::string DecodeText(const DecodeReport& r) {
  auto line = [](const char* name, const DecodePhase& p) {
    const int64_t ok = p.calls - p.errors;
    return absl::StrFormat(
        "%-9s %7d calls %4d errors %8.2f s %10.1f calls/s  p50 %8.3f ms  "
        "p99 %8.3f ms  server compute %8.1f us/call  batch %5.2f\n",
        name, p.calls, p.errors, p.seconds, p.CallsPerSecond(),
        p.LatencyMs(0.5), p.LatencyMs(0.99),
        ok > 0 ? static_cast<double>(p.compute_us) / ok : 0.0,
        ok > 0 ? static_cast<double>(p.batch_requests) / ok : 0.0);
  };
  std::string out = absl::StrFormat(
      "decode mode: %d sessions, context %d tokens, d_model %d, longest "
      "session %d tokens\n",
      r.sessions, r.context, r.d_model, r.final_length);
  out += line("prefill", r.prefill);
  out += line("decode", r.decode);
  out += line("recompute", r.recompute);
  const double decode_rate = r.decode.CallsPerSecond();
  const double recompute_rate = r.recompute.CallsPerSecond();
  out += absl::StrFormat(
      "decode tokens/s %.1f vs recompute tokens/s %.1f: %.1fx\n", decode_rate,
      recompute_rate, recompute_rate > 0 ? decode_rate / recompute_rate : 0.0);
  for (const DecodePhase* p : {&r.decode, &r.recompute}) {
    if (!p->first_error.empty()) {
      out += absl::StrCat("first error: ", p->first_error, "\n");
    }
  }
  return out;
}

}  // namespace attn::loadgen
