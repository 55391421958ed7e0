// grpc_floor: the gRPC floor under attn_server -- a callback-API unary echo
// server and a closed-loop client of the same payload sizes, so that the
// cost of the RPC alone can be compared with the served requests/s (see
// bench/batching_gain.py and docs/notes/batching.md).
//
//   grpc_floor --mode=server --port=0             # prints "listening on PORT"
//   grpc_floor --mode=client --target=127.0.0.1:PORT --concurrency=64 \
//       --request_bytes=16384 --response_bytes=16384 --duration_s=5
//   grpc_floor --mode=both --concurrency=64       # both in one process
//
// The client keeps `concurrency` calls outstanding over one channel (as
// attn_loadgen's default --connections=1), runs --warmup_s, then measures
// --duration_s and prints one JSON line:
//   {"requests_per_second": ..., "p50_us": ..., "p99_us": ..., ...}
// The server answers every Echo with `response_bytes` bytes (0: echo the
// request's payload back). Thread-safety: the client's counters are atomics
// or guarded by a mutex; the server's reactor is stateless.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc_floor.grpc.pb.h"

namespace {

using attn::bench::EchoMessage;
using attn::bench::EchoService;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string mode = "both";  // server | client | both
  std::string target;
  int port = 0;
  int concurrency = 64;
  int64_t request_bytes = 16384;
  int64_t response_bytes = 16384;
  double duration_s = 5;
  double warmup_s = 1;
};

bool ParseFlag(const char* arg, const char* name, std::string* value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *value = arg + n + 1;
  return true;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string v;
    if (ParseFlag(argv[i], "--mode", &v)) {
      f.mode = v;
    } else if (ParseFlag(argv[i], "--target", &v)) {
      f.target = v;
    } else if (ParseFlag(argv[i], "--port", &v)) {
      f.port = std::atoi(v.c_str());
    } else if (ParseFlag(argv[i], "--concurrency", &v)) {
      f.concurrency = std::max(1, std::atoi(v.c_str()));
    } else if (ParseFlag(argv[i], "--request_bytes", &v)) {
      f.request_bytes = std::atoll(v.c_str());
    } else if (ParseFlag(argv[i], "--response_bytes", &v)) {
      f.response_bytes = std::atoll(v.c_str());
    } else if (ParseFlag(argv[i], "--duration_s", &v)) {
      f.duration_s = std::atof(v.c_str());
    } else if (ParseFlag(argv[i], "--warmup_s", &v)) {
      f.warmup_s = std::atof(v.c_str());
    } else {
      std::fprintf(stderr,
                   "grpc_floor: unknown flag %s\nflags: --mode=server|client|"
                   "both --target --port --concurrency --request_bytes "
                   "--response_bytes --duration_s --warmup_s\n",
                   argv[i]);
      std::exit(2);
    }
  }
  if (f.mode != "server" && f.mode != "client" && f.mode != "both") {
    std::fprintf(stderr, "grpc_floor: --mode must be server, client or both\n");
    std::exit(2);
  }
  if (f.mode == "client" && f.target.empty()) {
    std::fprintf(stderr, "grpc_floor: --mode=client needs --target\n");
    std::exit(2);
  }
  return f;
}

class EchoServiceImpl final : public EchoService::CallbackService {
 public:
  explicit EchoServiceImpl(int64_t response_bytes)
      : response_(response_bytes > 0 ? std::string(response_bytes, 'r')
                                     : std::string()) {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoMessage* request,
                                 EchoMessage* response) override {
    response->set_payload(response_.empty() ? request->payload() : response_);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  const std::string response_;
};

// Closed-loop client: `concurrency` slots, each re-sending on completion.
class Client {
 public:
  Client(std::shared_ptr<grpc::Channel> channel, const Flags& flags)
      : stub_(EchoService::NewStub(channel)), flags_(flags) {
    request_.set_payload(std::string(flags.request_bytes, 'q'));
  }

  void Run() {
    const auto start = Clock::now();
    measure_from_ = start + ToDuration(flags_.warmup_s);
    measure_until_ = measure_from_ + ToDuration(flags_.duration_s);
    for (int i = 0; i < flags_.concurrency; ++i) Send();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return outstanding_ == 0 && stopped_; });
  }

  void Print() {
    std::lock_guard<std::mutex> lock(mu_);
    std::sort(latencies_us_.begin(), latencies_us_.end());
    auto pct = [this](double p) -> double {
      if (latencies_us_.empty()) return 0;
      size_t i = static_cast<size_t>(p / 100.0 * (latencies_us_.size() - 1));
      return latencies_us_[i];
    };
    std::printf(
        "{\"tool\": \"grpc_floor\", \"concurrency\": %d, \"request_bytes\": "
        "%lld, \"response_bytes\": %lld, \"duration_s\": %.3f, \"ok\": %lld, "
        "\"errors\": %lld, \"requests_per_second\": %.1f, \"p50_us\": %.1f, "
        "\"p99_us\": %.1f}\n",
        flags_.concurrency, static_cast<long long>(flags_.request_bytes),
        static_cast<long long>(flags_.response_bytes), flags_.duration_s,
        static_cast<long long>(latencies_us_.size()),
        static_cast<long long>(errors_),
        latencies_us_.size() / flags_.duration_s, pct(50), pct(99));
    std::fflush(stdout);
  }

 private:
  struct Call {
    grpc::ClientContext context;
    EchoMessage response;
    Clock::time_point sent;
  };

  static Clock::duration ToDuration(double s) {
    return std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(s));
  }

  void Send() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++outstanding_;
    }
    auto* call = new Call();
    call->sent = Clock::now();
    stub_->async()->Echo(
        &call->context, &request_, &call->response,
        [this, call](grpc::Status status) { Done(call, std::move(status)); });
  }

  void Done(Call* call, grpc::Status status) {
    const auto now = Clock::now();
    bool again;
    {
      std::lock_guard<std::mutex> lock(mu_);
      --outstanding_;
      if (call->sent >= measure_from_ && call->sent < measure_until_) {
        if (status.ok()) {
          latencies_us_.push_back(
              std::chrono::duration<double, std::micro>(now - call->sent)
                  .count());
        } else {
          ++errors_;
        }
      }
      again = now < measure_until_;
      if (!again) stopped_ = true;
      if (outstanding_ == 0 && stopped_) cv_.notify_all();
    }
    delete call;
    if (again) Send();
  }

  std::unique_ptr<EchoService::Stub> stub_;
  const Flags flags_;
  EchoMessage request_;
  Clock::time_point measure_from_;
  Clock::time_point measure_until_;

  std::mutex mu_;
  std::condition_variable cv_;
  int outstanding_ = 0;
  bool stopped_ = false;
  int64_t errors_ = 0;
  std::vector<double> latencies_us_;
};

}  // namespace

int main(int argc, char** argv) {
  const Flags flags = ParseFlags(argc, argv);
  std::unique_ptr<EchoServiceImpl> service;
  std::unique_ptr<grpc::Server> server;
  std::string target = flags.target;
  if (flags.mode != "client") {
    service = std::make_unique<EchoServiceImpl>(flags.response_bytes);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(flags.port),
                             grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    if (server == nullptr || port == 0) {
      std::fprintf(stderr, "grpc_floor: cannot listen on 127.0.0.1:%d\n",
                   flags.port);
      return 1;
    }
    target = "127.0.0.1:" + std::to_string(port);
    if (flags.mode == "server") {
      std::printf("grpc_floor listening on %s\n", target.c_str());
      std::fflush(stdout);
      // Serve until SIGINT/SIGTERM.
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGINT);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      int sig = 0;
      sigwait(&set, &sig);
      server->Shutdown();
      return 0;
    }
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  Client client(grpc::CreateCustomChannel(
                    target, grpc::InsecureChannelCredentials(), args),
                flags);
  client.Run();
  client.Print();
  if (server != nullptr) server->Shutdown();
  return 0;
}
