#include "client/loadgen/v2_slot.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace attn::loadgen {
namespace {

const char* DataTypeName(v1::DataType dtype) {
  switch (dtype) {
    case v1::BFLOAT16:
      return "BF16";
    case v1::FLOAT16:
      return "FP16";
    case v1::BOOL:
      return "BOOL";
    default:
      return "FP32";
  }
}

// (name, tensor) of the request's set tensors, in v2 input order.
std::vector<std::pair<const char*, const v1::Tensor*>> Inputs(
    const v1::AttendRequest& r) {
  std::vector<std::pair<const char*, const v1::Tensor*>> out = {
      {"query", &r.query()}};
  if (r.has_key()) out.emplace_back("key", &r.key());
  if (r.has_value()) out.emplace_back("value", &r.value());
  if (r.has_attn_mask()) out.emplace_back("attn_mask", &r.attn_mask());
  return out;
}

grpc::StatusCode CodeOfHttp(int status) {
  switch (status) {
    case 200:
      return grpc::StatusCode::OK;
    case 400:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
      return grpc::StatusCode::NOT_FOUND;
    case 413:
    case 429:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    case 504:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    default:
      return grpc::StatusCode::UNKNOWN;
  }
}

class V2GrpcSlot final : public Slot {
 public:
  V2GrpcSlot(inference::GRPCInferenceService::Stub* stub,
             SlotListener* listener, absl::Duration deadline)
      : stub_(stub), listener_(listener), deadline_(deadline) {}

  void Send(const v1::AttendRequest* request) override {
    auto [it, inserted] = converted_.try_emplace(request);
    if (inserted) it->second = ToModelInferRequest(*request);
    grpc::ClientContext* context = FreshContext(&mu_, &context_, deadline_);
    response_.Clear();
    stub_->async()->ModelInfer(context, &it->second, &response_,
                               [this](grpc::Status status) {
                                 CallOutcome o;
                                 o.code = status.error_code();
                                 listener_->OnComplete(this, o);
                               });
  }

  void Cancel() override {
    absl::MutexLock l(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }

 private:
  inference::GRPCInferenceService::Stub* const stub_;
  SlotListener* const listener_;
  const absl::Duration deadline_;
  // Touched by Send only (one request at a time).
  std::map<const v1::AttendRequest*, inference::ModelInferRequest> converted_;
  absl::Mutex mu_;
  std::unique_ptr<grpc::ClientContext> context_ ABSL_GUARDED_BY(mu_);
  inference::ModelInferResponse response_;
};

class HttpSlot final : public Slot {
 public:
  HttpSlot(std::string host_port, bool binary, std::string auth_token,
           SlotListener* listener)
      : host_port_(std::move(host_port)),
        binary_(binary),
        auth_token_(std::move(auth_token)),
        listener_(listener),
        thread_([this] { Run(); }) {}

  ~HttpSlot() override {
    Shutdown();
    WaitDone(absl::InfiniteFuture());
  }

  void Send(const v1::AttendRequest* request) override {
    absl::MutexLock l(&mu_);
    next_ = request;
  }

  void Cancel() override {
    absl::MutexLock l(&mu_);
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);  // the call fails: UNAVAILABLE
  }

  void Shutdown() override {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }

  bool WaitDone(absl::Time deadline) override {
    {
      absl::MutexLock l(&mu_);
      auto done = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_; };
      if (!mu_.AwaitWithDeadline(absl::Condition(&done), deadline)) {
        return false;
      }
    }
    if (thread_.joinable()) thread_.join();
    return true;
  }

 private:
  void Run() {
    while (true) {
      const v1::AttendRequest* request = nullptr;
      {
        absl::MutexLock l(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || next_ != nullptr;
        };
        mu_.Await(absl::Condition(&ready));
        if (next_ == nullptr) break;  // stopped with nothing to send
        request = next_;
        next_ = nullptr;
      }
      CallOutcome o;
      o.code = Post(*request);
      listener_->OnComplete(this, o);  // may Send the next request
    }
    CloseSocket();
    absl::MutexLock l(&mu_);
    finished_ = true;
  }

  // One POST on the keep-alive connection (reconnecting when needed).
  grpc::StatusCode Post(const v1::AttendRequest& request) {
    auto [it, inserted] = bodies_.try_emplace(&request);
    if (inserted) {
      int64_t header_length = -1;
      absl::StatusOr<std::string> body =
          ToHttpBody(request, binary_, &header_length);
      if (!body.ok()) return grpc::StatusCode::INVALID_ARGUMENT;
      std::string head = absl::StrCat(
          "POST /v2/models/", request.model(),
          request.version() > 0 ? absl::StrCat("/versions/", request.version())
                                : "",
          "/infer HTTP/1.1\r\nHost: ", host_port_, "\r\nContent-Type: ",
          binary_ ? "application/octet-stream" : "application/json",
          "\r\nContent-Length: ", body->size(), "\r\n");
      if (header_length >= 0) {
        absl::StrAppend(
            &head, "Inference-Header-Content-Length: ", header_length, "\r\n");
      }
      if (!auth_token_.empty()) {
        absl::StrAppend(&head, "Authorization: Bearer ", auth_token_, "\r\n");
      }
      it->second = absl::StrCat(head, "\r\n", *body);
    }
    if (fd() < 0 && !Connect()) return grpc::StatusCode::UNAVAILABLE;
    int status = 0;
    if (!WriteAll(it->second) || !ReadResponse(&status)) {
      CloseSocket();
      return grpc::StatusCode::UNAVAILABLE;
    }
    return CodeOfHttp(status);
  }

  int fd() {
    absl::MutexLock l(&mu_);
    return fd_;
  }

  bool Connect() {
    const size_t colon = host_port_.rfind(':');
    if (colon == std::string::npos) return false;
    std::string host = host_port_.substr(0, colon);
    if (host.size() > 1 && host.front() == '[') {
      host = host.substr(1, host.size() - 2);
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), host_port_.substr(colon + 1).c_str(), &hints,
                    &res) != 0) {
      return false;
    }
    int s = -1;
    for (addrinfo* a = res; a != nullptr && s < 0; a = a->ai_next) {
      s = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
      if (s >= 0 && ::connect(s, a->ai_addr, a->ai_addrlen) != 0) {
        ::close(s);
        s = -1;
      }
    }
    freeaddrinfo(res);
    if (s < 0) return false;
    const int one = 1;
    ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    absl::MutexLock l(&mu_);
    fd_ = s;
    buffer_.clear();
    return true;
  }

  void CloseSocket() {
    absl::MutexLock l(&mu_);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool WriteAll(const std::string& data) {
    const int s = fd();
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n =
          ::send(s, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads more bytes into buffer_; false on EOF or error.
  bool Fill() {
    char chunk[64 * 1024];
    const ssize_t n = ::recv(fd(), chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  // Reads one response (status line, headers, Content-Length body).
  bool ReadResponse(int* status) {
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return false;
    }
    const std::string head = buffer_.substr(0, end);
    if (head.size() < 12 || !absl::SimpleAtoi(head.substr(9, 3), status)) {
      return false;
    }
    int64_t length = 0;
    const std::string lower = absl::AsciiStrToLower(head);
    const size_t at = lower.find("\r\ncontent-length:");
    if (at != std::string::npos) {
      const size_t from = at + 17;
      const size_t to = lower.find("\r\n", from);
      if (!absl::SimpleAtoi(
              absl::StripAsciiWhitespace(lower.substr(from, to - from)),
              &length)) {
        return false;
      }
    }
    const size_t total = end + 4 + static_cast<size_t>(length);
    while (buffer_.size() < total) {
      if (!Fill()) return false;
    }
    buffer_.erase(0, total);  // the body is not decoded (load test)
    return true;
  }

  const std::string host_port_;
  const bool binary_;
  const std::string auth_token_;
  SlotListener* const listener_;
  // Touched by the slot's thread only.
  std::map<const v1::AttendRequest*, std::string> bodies_;
  std::string buffer_;

  absl::Mutex mu_;
  const v1::AttendRequest* next_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace

inference::ModelInferRequest ToModelInferRequest(
    const v1::AttendRequest& request) {
  inference::ModelInferRequest out;
  out.set_model_name(request.model());
  if (request.version() > 0) {
    out.set_model_version(absl::StrCat(request.version()));
  }
  out.set_id(request.request_id());
  for (const auto& [name, t] : Inputs(request)) {
    auto* input = out.add_inputs();
    input->set_name(name);
    input->set_datatype(DataTypeName(t->dtype()));
    for (int64_t d : t->shape()) input->add_shape(d);
    out.add_raw_input_contents(t->data());
  }
  if (request.key_lengths_size() > 0) {
    auto* input = out.add_inputs();
    input->set_name("key_lengths");
    input->set_datatype("INT32");
    input->add_shape(request.key_lengths_size());
    std::string bytes(sizeof(int32_t) * request.key_lengths_size(), '\0');
    std::memcpy(bytes.data(), request.key_lengths().data(), bytes.size());
    out.add_raw_input_contents(std::move(bytes));
  }
  if (request.has_causal()) {
    (*out.mutable_parameters())["causal"].set_bool_param(request.causal());
  }
  if (request.return_attention_weights()) {
    (*out.mutable_parameters())["return_attention_weights"].set_bool_param(
        true);
  }
  return out;
}

absl::StatusOr<std::string> ToHttpBody(const v1::AttendRequest& request,
                                       bool binary, int64_t* header_length) {
  const inference::ModelInferRequest v2 = ToModelInferRequest(request);
  nlohmann::json doc;
  if (!v2.id().empty()) doc["id"] = v2.id();
  for (const auto& [key, p] : v2.parameters()) {
    doc["parameters"][key] = p.bool_param();
  }
  if (binary) doc["parameters"]["binary_data_output"] = true;
  std::string raw;
  for (int i = 0; i < v2.inputs_size(); ++i) {
    const auto& in = v2.inputs(i);
    const std::string& bytes = v2.raw_input_contents(i);
    nlohmann::json t = {
        {"name", in.name()},
        {"datatype", in.datatype()},
        {"shape", std::vector<int64_t>(in.shape().begin(), in.shape().end())}};
    if (binary) {
      t["parameters"]["binary_data_size"] = bytes.size();
      raw += bytes;
    } else if (in.datatype() == "FP32") {
      std::vector<float> values(bytes.size() / sizeof(float));
      std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
      t["data"] = values;
    } else if (in.datatype() == "INT32") {
      std::vector<int32_t> values(bytes.size() / sizeof(int32_t));
      std::memcpy(values.data(), bytes.data(), bytes.size());
      t["data"] = values;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--protocol=http_json sends FLOAT32 only; input '", in.name(),
          "' is ", in.datatype(), " (use --protocol=http)"));
    }
    doc["inputs"].push_back(std::move(t));
  }
  std::string json = doc.dump();
  *header_length = binary ? static_cast<int64_t>(json.size()) : -1;
  return json + raw;
}

std::unique_ptr<Slot> MakeV2GrpcSlot(
    inference::GRPCInferenceService::Stub* stub, SlotListener* listener,
    absl::Duration deadline) {
  return std::make_unique<V2GrpcSlot>(stub, listener, deadline);
}

std::unique_ptr<Slot> MakeHttpSlot(const std::string& host_port, bool binary,
                                   const std::string& auth_token,
                                   SlotListener* listener) {
  return std::make_unique<HttpSlot>(host_port, binary, auth_token, listener);
}

}  // namespace attn::loadgen
