#include "client/channel_credentials.h"

#include <fstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/pem_files.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace attn {
namespace {

// Adds `authorization: Bearer <token>` to the initial metadata of a call.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header)
      : header_(header) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory
};

class BearerTokenFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* /*info*/) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ChannelSecurity& security) {
  if (!security.UsesTls()) return grpc::InsecureChannelCredentials();
  if (security.tls_cert.empty() != security.tls_key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both (mutual TLS) or "
        "neither");
  }
  grpc::SslCredentialsOptions options;
  if (!security.tls_ca.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemCertificates("--tls_ca", security.tls_ca);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = std::move(*ca);
  }
  if (!security.tls_cert.empty()) {
    absl::StatusOr<PemKeyPair> pair = ReadPemKeyPair(
        "--tls_cert", security.tls_cert, "--tls_key", security.tls_key);
    if (!pair.ok()) return pair.status();
    options.pem_cert_chain = std::move(pair->certificate_chain);
    options.pem_private_key = std::move(pair->private_key);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(
    const std::string& target, const ChannelSecurity& security,
    grpc::ChannelArguments args) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(security);
  if (!credentials.ok()) return credentials.status();
  if (!security.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(security.tls_server_name);
  }
  if (security.auth_token.empty()) {
    return grpc::CreateCustomChannel(target, *credentials, args);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<BearerTokenFactory>(security.auth_token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, *credentials, args, std::move(interceptors));
}

std::string ConnectionHint(absl::StatusCode code, absl::string_view message,
                           const ChannelSecurity& security) {
  if (code != absl::StatusCode::kUnavailable) return "";
  if (!security.UsesTls()) {
    return " (hint: if the server runs with --tls_cert, connect with "
           "--tls_ca=CA.pem, and under mutual TLS also --tls_cert/--tls_key)";
  }
  if (absl::StrContains(message, "certificate verify failed")) {
    return " (hint: the server's certificate is not signed by --tls_ca)";
  }
  if (absl::StrContains(message, "Peer name")) {
    return " (hint: the server's certificate does not carry this name; "
           "set --tls_server_name to a name it carries)";
  }
  return " (hint: the server ended the TLS handshake: it may be plaintext, "
         "or require a client certificate (--tls_cert/--tls_key) signed by "
         "its --tls_client_ca)";
}

absl::StatusOr<std::string> ReadAuthTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("--auth_token_file=", path, ": cannot read"));
  }
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view token = absl::StripAsciiWhitespace(line);
    if (token.empty() || absl::StartsWith(token, "#")) continue;
    return std::string(token);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--auth_token_file=", path,
      " holds no token (expected one token on a line; '#' lines are "
      "comments)"));
}

}  // namespace attn
