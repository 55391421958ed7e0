// attn_cli: command-line client of an attnserve server.
//
//   attn_cli health [--target=HOST:PORT]
//   attn_cli models [--target=...] [--model=NAME [--version=N]]
//   attn_cli attend [--target=...] --random=2,8,256 [--seed=1] [--output=y.npy]
//   attn_cli load|unload --model=NAME, attn_cli reload, attn_cli status
//     [--model=NAME]   (attn.v1.ModelService; --enable_model_control)
//
// Exit status: 0 on success, 1 when the server answers an error (its gRPC
// status name and message are printed on stderr), 2 for a usage or file
// error.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "attn/v1/model_service.grpc.pb.h"
#include "client/array_io.h"
#include "client/attn_client.h"

namespace attn {
namespace {

constexpr char kUsage[] = R"(usage: attn_cli <command> [flags]

commands:
  health   grpc.health.v1 check; exit 0 when SERVING
  models   list the loaded models (or describe one with --model)
  attend   run attention on a query and print a summary or write the output
  load     --model=NAME: load (or reload) a model of the repository, wait
  unload   --model=NAME: take a model out of service (until load)
  reload   rescan the whole repository now, wait for its loads
  status   [--model=NAME]: versions with state, error, load time, memory
           (load/unload/reload/status need attn_server --enable_model_control)

common flags:
  --target=HOST:PORT     server address (default 127.0.0.1:50051)
  --deadline_ms=N        deadline of the call (default 30000)
  --tls_ca=PEM           TLS: verify the server against this CA bundle
  --tls_cert=PEM --tls_key=PEM   client certificate and key (mutual TLS)
  --tls_server_name=NAME name the server certificate must carry
  --auth_token_file=FILE send 'authorization: Bearer <first token of FILE>'

models flags:
  --model=NAME [--version=N]   describe one model (version 0 = newest)

attend flags:
  --model=NAME           model (default demo)      --version=N (default 0)
  --input=FILE           query, .npy ('<f4', C order) or .json nested lists
  --random=B,S,D | S,D   random uniform[-1,1) query instead of --input
  --seed=N               seed of --random (default 0)
  --key=FILE --value=FILE  cross-attention key/value ([B, Sk, D])
  --attn_mask=FILE       float mask added to the scores ([Sq, Sk] or [B, Sq, Sk])
  --causal | --no_causal override the model's default causal setting
  --key_lengths=L1,L2,.. one valid key length per batch item
  --dtype=float32|bfloat16|float16   wire dtype of the inputs (default float32)
  --return_weights       also return the attention weights [B, H, Sq, Sk]
  --output=FILE          write the output (.npy or .json) instead of a summary
  --weights_output=FILE  write the attention weights (.npy or .json)
  --request_id=ID        echoed back by the server
)";

// A parsed command line: the command and its --flags.
struct CommandLine {
  std::string command;
  std::map<std::string, std::string> flags;  // bool flags map to "true"
};

const std::set<std::string>& BoolFlags() {
  static const auto* flags = new std::set<std::string>{
      "causal", "no_causal", "return_weights", "help"};
  return *flags;
}

const std::set<std::string>& AllowedFlags(const std::string& command) {
  static const auto* allowed = new std::map<std::string, std::set<std::string>>{
      {"health", {"target", "deadline_ms", "service", "help"}},
      {"models", {"target", "deadline_ms", "model", "version", "help"}},
      {"load", {"target", "deadline_ms", "model", "help"}},
      {"unload", {"target", "deadline_ms", "model", "help"}},
      {"reload", {"target", "deadline_ms", "help"}},
      {"status", {"target", "deadline_ms", "model", "help"}},
      {"attend",
       {"target", "deadline_ms", "model", "version", "input", "random", "seed",
        "key", "value", "attn_mask", "causal", "no_causal", "key_lengths",
        "dtype", "return_weights", "output", "weights_output", "request_id",
        "help"}},
  };
  static const auto* none = new std::set<std::string>{};
  auto it = allowed->find(command);
  return it == allowed->end() ? *none : it->second;
}

// The connection-security flags, accepted by every command.
const std::set<std::string>& SecurityFlags() {
  static const auto* flags = new std::set<std::string>{
      "tls_ca", "tls_cert", "tls_key", "tls_server_name", "auth_token_file"};
  return *flags;
}

absl::StatusOr<CommandLine> ParseCommandLine(int argc, char** argv) {
  CommandLine line;
  if (argc < 2) return absl::InvalidArgumentError("missing command");
  line.command = argv[1];
  if (line.command == "--help" || line.command == "-h" ||
      line.command == "help") {
    line.flags["help"] = "true";
    return line;
  }
  const std::set<std::string>& allowed = AllowedFlags(line.command);
  if (allowed.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown command '", line.command,
        "'; expected health|models|attend|load|unload|reload|status"));
  }
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "'"));
    }
    arg = arg.substr(2);
    std::string name = arg;
    std::string value;
    const size_t eq = arg.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (allowed.count(name) == 0 && SecurityFlags().count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag --", name, " for command '", line.command, "'"));
    }
    if (BoolFlags().count(name) > 0) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " takes no value (or true/false)"));
      }
      line.flags[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    line.flags[name] = value;
  }
  return line;
}

std::string Flag(const CommandLine& line, const std::string& name,
                 const std::string& default_value = "") {
  auto it = line.flags.find(name);
  return it == line.flags.end() ? default_value : it->second;
}

bool BoolFlag(const CommandLine& line, const std::string& name) {
  return Flag(line, name, "false") == "true";
}

absl::StatusOr<int64_t> IntFlag(const CommandLine& line,
                                const std::string& name,
                                int64_t default_value) {
  auto it = line.flags.find(name);
  if (it == line.flags.end()) return default_value;
  int64_t value;
  if (!absl::SimpleAtoi(it->second, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, "=", it->second, " is not an integer"));
  }
  return value;
}

absl::StatusOr<std::vector<int64_t>> IntListFlag(const CommandLine& line,
                                                 const std::string& name) {
  std::vector<int64_t> values;
  for (absl::string_view part :
       absl::StrSplit(Flag(line, name), ',', absl::SkipWhitespace())) {
    int64_t value;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, ": '", part, "' is not an integer"));
    }
    values.push_back(value);
  }
  return values;
}

// Uniform [-1, 1) values from mt19937 (the same on every platform).
std::vector<float> RandomValues(int64_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) {
    v = static_cast<float>(generator() >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  return values;
}

struct Summary {
  double mean = 0, stddev = 0, min = 0, max = 0;
};

Summary Summarize(const std::vector<float>& values) {
  Summary s;
  if (values.empty()) return s;
  s.min = s.max = values[0];
  double sum = 0;
  for (float v : values) {
    sum += v;
    s.min = std::min<double>(s.min, v);
    s.max = std::max<double>(s.max, v);
  }
  s.mean = sum / static_cast<double>(values.size());
  double sq = 0;
  for (float v : values) sq += (v - s.mean) * (v - s.mean);
  s.stddev = std::sqrt(sq / static_cast<double>(values.size()));
  return s;
}

std::string ShapeText(const v1::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.shape(), ", "), "]");
}

// An error with its exit status: 1 from the server, 2 local.
struct Failure {
  absl::Status status;
  int exit_code;
};

// The connection security of this run (for hints on UNAVAILABLE).
ChannelSecurity g_security;

int Report(const Failure& failure) {
  std::cerr << "attn_cli: " << absl::StatusCodeToString(failure.status.code())
            << ": " << failure.status.message()
            << ConnectionHint(failure.status.code(), failure.status.message(),
                              g_security)
            << "\n";
  if (failure.exit_code == 2 &&
      failure.status.code() == absl::StatusCode::kInvalidArgument &&
      failure.status.message().find("command") != absl::string_view::npos) {
    std::cerr << kUsage;
  }
  return failure.exit_code;
}

Failure Local(absl::Status status) { return {std::move(status), 2}; }
Failure Remote(absl::Status status) { return {std::move(status), 1}; }

int RunHealth(Client& client, const CommandLine& line, absl::Time deadline) {
  absl::StatusOr<HealthStatus> health =
      client.Health(Flag(line, "service"), deadline);
  if (!health.ok()) return Report(Remote(health.status()));
  std::cout << HealthStatusName(*health) << "\n";
  return *health == HealthStatus::kServing ? 0 : 1;
}

void PrintModel(const v1::ModelInfo& m) {
  std::cout << m.name() << "\tversion=" << m.version()
            << "\td_model=" << m.d_model() << "\tnum_heads=" << m.num_heads()
            << "\tnum_kv_heads=" << m.num_kv_heads()
            << "\thead_dim=" << m.head_dim()
            << "\tcompute_dtype=" << m.compute_dtype()
            << "\tcausal=" << (m.causal() ? "true" : "false")
            << "\tmax_sequence_length=" << m.max_sequence_length()
            << "\tsource=" << m.source()
            << "\timplementation=" << m.implementation() << "\n";
}

int RunModels(Client& client, const CommandLine& line, absl::Time deadline) {
  if (line.flags.count("model") > 0) {
    absl::StatusOr<int64_t> version = IntFlag(line, "version", 0);
    if (!version.ok()) return Report(Local(version.status()));
    absl::StatusOr<v1::ModelInfo> info =
        client.GetModel(Flag(line, "model"), *version, deadline);
    if (!info.ok()) return Report(Remote(info.status()));
    PrintModel(*info);
    return 0;
  }
  absl::StatusOr<v1::ListModelsResponse> models = client.ListModels(deadline);
  if (!models.ok()) return Report(Remote(models.status()));
  for (const v1::ModelInfo& m : models->models()) PrintModel(m);
  return 0;
}

const char* StateName(v1::VersionStatus::State state) {
  switch (state) {
    case v1::VersionStatus::LOADING:
      return "LOADING";
    case v1::VersionStatus::READY:
      return "READY";
    case v1::VersionStatus::UNLOADING:
      return "UNLOADING";
    case v1::VersionStatus::FAILED:
      return "FAILED";
    default:
      return "UNSPECIFIED";
  }
}

// load | unload | reload | status, over attn.v1.ModelService on the
// client's channel (same TLS and token).
int RunModelControl(Client& client, const CommandLine& line,
                    absl::Time deadline) {
  const std::string& command = line.command;
  const std::string model = Flag(line, "model");
  if ((command == "load" || command == "unload") && model.empty()) {
    return Report(Local(absl::InvalidArgumentError(
        absl::StrCat("attn_cli ", command, " needs --model=NAME"))));
  }
  auto stub = v1::ModelService::NewStub(client.channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  v1::ModelStatusResponse response;
  grpc::Status status;
  if (command == "load") {
    v1::LoadModelRequest request;
    request.set_name(model);
    status = stub->LoadModel(&context, request, &response);
  } else if (command == "unload") {
    v1::UnloadModelRequest request;
    request.set_name(model);
    status = stub->UnloadModel(&context, request, &response);
  } else if (command == "reload") {
    status = stub->ReloadRepository(&context, v1::ReloadRepositoryRequest(),
                                    &response);
  } else {
    v1::ModelStatusRequest request;
    request.set_name(model);
    status = stub->ModelStatus(&context, request, &response);
  }
  for (const v1::ModelLifecycleStatus& m : response.models()) {
    std::cout << m.name() << "\tpolicy=" << m.version_policy()
              << (m.unloaded() ? "\tunloaded" : "") << "\n";
    for (const v1::VersionStatus& v : m.versions()) {
      std::cout << "  version=" << v.version() << "\t" << StateName(v.state())
                << "\tmemory_bytes=" << v.memory_bytes()
                << "\tload_seconds=" << v.load_seconds();
      if (!v.last_error().empty()) std::cout << "\terror=" << v.last_error();
      std::cout << "\n";
    }
  }
  if (!status.ok()) {
    absl::Status s(static_cast<absl::StatusCode>(status.error_code()),
                   status.error_message());
    if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
      s = absl::UnimplementedError(
          absl::StrCat(status.error_message(),
                       " (start attn_server with --enable_model_control)"));
    }
    return Report(Remote(s));
  }
  return 0;
}

absl::StatusOr<v1::DataType> ParseDType(const std::string& name) {
  if (name == "float32") return v1::FLOAT32;
  if (name == "bfloat16") return v1::BFLOAT16;
  if (name == "float16") return v1::FLOAT16;
  return absl::InvalidArgumentError(absl::StrCat(
      "--dtype=", name, "; expected float32, bfloat16 or float16"));
}

absl::Status LoadTensorFile(const CommandLine& line, const std::string& flag,
                            v1::DataType dtype, v1::Tensor* tensor) {
  absl::StatusOr<FloatArray> array = ReadArrayFile(Flag(line, flag));
  if (!array.ok()) {
    return absl::Status(
        array.status().code(),
        absl::StrCat("--", flag, ": ", array.status().message()));
  }
  absl::StatusOr<v1::Tensor> t = MakeTensor(array->values, array->shape, dtype);
  if (!t.ok()) return t.status();
  *tensor = *std::move(t);
  return absl::OkStatus();
}

// Fills `request` from the attend flags.
absl::Status BuildAttendRequest(const CommandLine& line,
                                v1::AttendRequest* request) {
  request->set_model(Flag(line, "model", "demo"));
  absl::StatusOr<int64_t> version = IntFlag(line, "version", 0);
  if (!version.ok()) return version.status();
  request->set_version(*version);
  request->set_request_id(Flag(line, "request_id"));
  absl::StatusOr<v1::DataType> dtype =
      ParseDType(Flag(line, "dtype", "float32"));
  if (!dtype.ok()) return dtype.status();

  const bool has_input = line.flags.count("input") > 0;
  const bool has_random = line.flags.count("random") > 0;
  if (has_input == has_random) {
    return absl::InvalidArgumentError(
        "attend needs exactly one of --input=FILE and --random=B,S,D");
  }
  if (has_input) {
    absl::Status s =
        LoadTensorFile(line, "input", *dtype, request->mutable_query());
    if (!s.ok()) return s;
  } else {
    absl::StatusOr<std::vector<int64_t>> shape = IntListFlag(line, "random");
    if (!shape.ok()) return shape.status();
    if (shape->size() != 2 && shape->size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--random=", Flag(line, "random"), "; expected B,S,D or S,D"));
    }
    absl::StatusOr<int64_t> count = NumElements(*shape);
    if (!count.ok()) return count.status();
    absl::StatusOr<int64_t> seed = IntFlag(line, "seed", 0);
    if (!seed.ok()) return seed.status();
    absl::StatusOr<v1::Tensor> query = MakeTensor(
        RandomValues(*count, static_cast<uint32_t>(*seed)), *shape, *dtype);
    if (!query.ok()) return query.status();
    *request->mutable_query() = *std::move(query);
  }
  for (const char* name : {"key", "value"}) {
    if (line.flags.count(name) == 0) continue;
    v1::Tensor* tensor = std::string(name) == "key" ? request->mutable_key()
                                                    : request->mutable_value();
    absl::Status s = LoadTensorFile(line, name, *dtype, tensor);
    if (!s.ok()) return s;
  }
  if (line.flags.count("attn_mask") > 0) {
    absl::Status s = LoadTensorFile(line, "attn_mask", v1::FLOAT32,
                                    request->mutable_attn_mask());
    if (!s.ok()) return s;
  }
  if (BoolFlag(line, "causal") && BoolFlag(line, "no_causal")) {
    return absl::InvalidArgumentError("--causal and --no_causal conflict");
  }
  if (BoolFlag(line, "causal")) request->set_causal(true);
  if (BoolFlag(line, "no_causal")) request->set_causal(false);
  absl::StatusOr<std::vector<int64_t>> lengths =
      IntListFlag(line, "key_lengths");
  if (!lengths.ok()) return lengths.status();
  for (int64_t length : *lengths) {
    request->add_key_lengths(static_cast<int32_t>(length));
  }
  request->set_return_attention_weights(BoolFlag(line, "return_weights") ||
                                        line.flags.count("weights_output") > 0);
  return absl::OkStatus();
}

void PrintTensorSummary(const char* label, const v1::Tensor& tensor,
                        const std::vector<float>& values) {
  const Summary s = Summarize(values);
  std::cout << label << ": shape=" << ShapeText(tensor)
            << " dtype=" << v1::DataType_Name(tensor.dtype())
            << " mean=" << s.mean << " std=" << s.stddev << " min=" << s.min
            << " max=" << s.max << "\n";
  const size_t shown = std::min<size_t>(values.size(), 8);
  std::cout << "  first values: ["
            << absl::StrJoin(values.begin(), values.begin() + shown, ", ")
            << (values.size() > shown ? ", ...]" : "]") << "\n";
}

int RunAttend(Client& client, const CommandLine& line, absl::Time deadline) {
  v1::AttendRequest request;
  absl::Status built = BuildAttendRequest(line, &request);
  if (!built.ok()) return Report(Local(built));

  const absl::Time start = absl::Now();
  absl::StatusOr<v1::AttendResponse> response =
      client.Attend(request, deadline);
  const absl::Duration elapsed = absl::Now() - start;
  if (!response.ok()) return Report(Remote(response.status()));

  absl::StatusOr<std::vector<float>> output =
      TensorToFloats(response->output());
  if (!output.ok()) return Report(Remote(output.status()));
  const std::vector<int64_t> out_shape(response->output().shape().begin(),
                                       response->output().shape().end());
  std::vector<float> weights;
  if (response->has_attention_weights()) {
    absl::StatusOr<std::vector<float>> w =
        TensorToFloats(response->attention_weights());
    if (!w.ok()) return Report(Remote(w.status()));
    weights = *std::move(w);
  }
  if (line.flags.count("output") > 0) {
    absl::Status s = WriteArrayFile(Flag(line, "output"), out_shape, *output);
    if (!s.ok()) return Report(Local(s));
  }
  if (line.flags.count("weights_output") > 0) {
    if (!response->has_attention_weights()) {
      return Report(Remote(absl::InternalError(
          "the server returned no attention_weights although asked")));
    }
    const std::vector<int64_t> w_shape(
        response->attention_weights().shape().begin(),
        response->attention_weights().shape().end());
    absl::Status s =
        WriteArrayFile(Flag(line, "weights_output"), w_shape, weights);
    if (!s.ok()) return Report(Local(s));
  }
  if (line.flags.count("output") == 0) {
    std::cout << "model: " << response->model()
              << " version=" << response->version() << "\n";
    PrintTensorSummary("output", response->output(), *output);
    if (response->has_attention_weights()) {
      PrintTensorSummary("attention_weights", response->attention_weights(),
                         weights);
    }
    std::cout << "timing: round_trip_ms=" << absl::ToDoubleMilliseconds(elapsed)
              << " queue_us=" << response->timing().queue_us()
              << " compute_us=" << response->timing().compute_us()
              << " batch_requests=" << response->timing().batch_requests()
              << "\n";
  }
  return 0;
}

// ClientOptions of the --tls_* and --auth_token_file flags.
absl::StatusOr<ClientOptions> ClientOptionsFromFlags(const CommandLine& line) {
  ClientOptions options;
  options.security.tls_ca = Flag(line, "tls_ca");
  options.security.tls_cert = Flag(line, "tls_cert");
  options.security.tls_key = Flag(line, "tls_key");
  options.security.tls_server_name = Flag(line, "tls_server_name");
  if (line.flags.count("auth_token_file") > 0) {
    absl::StatusOr<std::string> token =
        ReadAuthTokenFile(Flag(line, "auth_token_file"));
    if (!token.ok()) return token.status();
    options.security.auth_token = *std::move(token);
  }
  return options;
}

int Main(int argc, char** argv) {
  absl::StatusOr<CommandLine> line = ParseCommandLine(argc, argv);
  if (!line.ok()) {
    std::cerr << "attn_cli: " << line.status().message() << "\n" << kUsage;
    return 2;
  }
  if (BoolFlag(*line, "help")) {
    std::cout << kUsage;
    return 0;
  }
  absl::StatusOr<int64_t> deadline_ms = IntFlag(*line, "deadline_ms", 30000);
  if (!deadline_ms.ok()) return Report(Local(deadline_ms.status()));
  if (*deadline_ms <= 0) {
    return Report(Local(absl::InvalidArgumentError(
        absl::StrCat("--deadline_ms=", *deadline_ms, " must be > 0"))));
  }
  const absl::Time deadline = absl::Now() + absl::Milliseconds(*deadline_ms);
  absl::StatusOr<ClientOptions> options = ClientOptionsFromFlags(*line);
  if (!options.ok()) return Report(Local(options.status()));
  g_security = options->security;
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(Flag(*line, "target", "127.0.0.1:50051"), *options);
  if (!client.ok()) return Report(Local(client.status()));

  if (line->command == "health") return RunHealth(**client, *line, deadline);
  if (line->command == "models") return RunModels(**client, *line, deadline);
  if (line->command == "load" || line->command == "unload" ||
      line->command == "reload" || line->command == "status") {
    return RunModelControl(**client, *line, deadline);
  }
  return RunAttend(**client, *line, deadline);
}

}  // namespace
}  // namespace attn

int main(int argc, char** argv) { return attn::Main(argc, argv); }
