// attn_loadgen: load-testing client of an attnserve server. See
// docs/loadgen.md for the flags, the measurement method and the JSON schema.
//
// Exit status: 0 when the run completed (whatever the servers' answers:
// errors are measurements), 1 when the model cannot be described or a
// report cannot be written, 2 for a usage error.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/loadgen/channels.h"
#include "client/loadgen/decode_mode.h"
#include "client/loadgen/flags.h"
#include "client/loadgen/payloads.h"
#include "client/loadgen/progress.h"
#include "client/loadgen/report.h"
#include "client/loadgen/step_runner.h"

namespace attn::loadgen {
namespace {

// d_model of the model under test: --d_model, or GetModel.
absl::StatusOr<int64_t> ResolveDModel(const Options& options,
                                      Connection& connection) {
  if (options.d_model > 0) return options.d_model;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetModelRequest request;
  request.set_model(options.model);
  request.set_version(options.version);
  v1::ModelInfo info;
  const grpc::Status status =
      connection.stub->GetModel(&context, request, &info);
  if (!status.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        absl::StrCat(
            "cannot describe model '", options.model, "' at ", options.target,
            ": ", status.error_message(),
            ConnectionHint(static_cast<absl::StatusCode>(status.error_code()),
                           status.error_message(), options.security),
            " (pass --d_model=N to send the requests anyway)"));
  }
  return info.d_model();
}

std::string StepLine(const StepResult& s) {
  const WindowResult& r = s.result;
  return absl::StrFormat(
      "%s: %.1f req/s, p50 %.3f ms, p99 %.3f ms, sent %d, errors %d, late "
      "%d, %d window(s)%s",
      s.level.Label(), r.RequestsPerSecond(),
      QuantileUs(r.latency_ns, 0.5) / 1e3, QuantileUs(r.latency_ns, 0.99) / 1e3,
      r.sent, r.errors, r.late_sends, s.windows_run,
      s.stable ? ", stable" : ", not stable");
}

int Run(const Options& options) {
  absl::StatusOr<std::vector<Connection>> made =
      MakeConnections(options.target, options.connections, options.security);
  if (!made.ok()) {
    std::cerr << "attn_loadgen: " << made.status() << "\n";
    return 2;
  }
  std::vector<Connection> connections = *std::move(made);
  absl::StatusOr<int64_t> d_model = ResolveDModel(options, connections[0]);
  if (!d_model.ok()) {
    std::cerr << "attn_loadgen: " << d_model.status() << "\n";
    return 1;
  }
  if (options.sessions > 0) {
    absl::StatusOr<DecodeReport> decode =
        RunDecode(options, &connections, *d_model);
    if (!decode.ok()) {
      std::cerr << "attn_loadgen: " << decode.status() << "\n";
      return 1;
    }
    std::cout << DecodeText(*decode) << std::flush;
    return 0;
  }
  absl::StatusOr<PayloadSet> payloads = PayloadSet::Build(options, *d_model);
  if (!payloads.ok()) {
    std::cerr << "attn_loadgen: " << payloads.status() << "\n";
    return 2;
  }

  Report report;
  report.options = &options;
  report.d_model = *d_model;
  report.started_at =
      absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  const std::vector<LoadLevel> levels = options.Levels();
  {
    ProgressLine progress(!options.quiet && isatty(STDOUT_FILENO));
    for (size_t i = 0; i < levels.size(); ++i) {
      const std::string label = absl::StrFormat(
          "[%d/%d] %s", i + 1, levels.size(), levels[i].Label());
      StepResult step = RunStep(levels[i], options, &connections, *payloads,
                                &progress, label);
      if (!options.quiet) {
        std::cerr << "attn_loadgen: " << StepLine(step) << std::endl;
      }
      const bool over = step.over_latency_limit;
      report.steps.push_back(std::move(step));
      if (over && i + 1 < levels.size()) {
        report.stopped_early = absl::StrCat(
            levels[i].Label(), " exceeded --latency_limit=",
            absl::FormatDuration(options.latency_limit), " at p99");
        break;
      }
    }
  }
  std::cout << TableText(report) << std::flush;
  int code = 0;
  auto write = [&](const std::string& path, const std::string& text) {
    if (path.empty()) return;
    if (absl::Status s = WriteTextFile(path, text); !s.ok()) {
      std::cerr << "attn_loadgen: " << s << "\n";
      code = 1;
    }
  };
  write(options.json_path, JsonText(report));
  write(options.csv_path, CsvText(report));
  write(options.html_path, HtmlText(report));
  return code;
}

}  // namespace
}  // namespace attn::loadgen

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "load-testing client of an attnserve server.\n"
      "  attn_loadgen --target=127.0.0.1:50051 --concurrency=8 --duration=10s\n"
      "  attn_loadgen --rate=200 --arrival=poisson --json=run.json\n"
      "  attn_loadgen --sweep=concurrency=1,2,4,8 --html=report.html\n"
      "See docs/loadgen.md.");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::cerr << "attn_loadgen: unexpected argument '" << rest[1]
              << "' (flags are --name=value)\n";
    return 2;
  }
  absl::StatusOr<attn::loadgen::Options> options =
      attn::loadgen::OptionsFromFlags();
  if (!options.ok()) {
    std::cerr << "attn_loadgen: " << options.status().message() << "\n";
    return 2;
  }
  return attn::loadgen::Run(*options);
}
