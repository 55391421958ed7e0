// Channel security of the attnserve clients (attn::Client, attn_cli,
// attn_loadgen): TLS (verifying the server against --tls_ca, or the system
// roots), mutual TLS (--tls_cert/--tls_key), an expected server name
// (--tls_server_name) and a bearer token sent as `authorization: Bearer
// <token>` on every call.
//
//   ChannelSecurity security;
//   security.tls_ca = "ca.pem";
//   security.auth_token = *ReadAuthTokenFile("token");
//   grpc::ChannelArguments args;   // the caller's own arguments
//   absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
//       CreateChannel("127.0.0.1:50051", security, std::move(args));
//
// The token is added by a client interceptor rather than call credentials:
// gRPC refuses call credentials on plaintext channels, and a token server
// may be plaintext (e.g. behind a TLS-terminating proxy).
//
// Thread-safety: the functions are thread-safe; the channel is too.
#ifndef ATTNSERVE_CLIENT_CHANNEL_CREDENTIALS_H_
#define ATTNSERVE_CLIENT_CHANNEL_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"

namespace attn {

struct ChannelSecurity {
  // PEM CA bundle (path) the server's certificate must chain to. Empty: the
  // system roots (when TLS is on).
  std::string tls_ca;
  // Client certificate chain and key (paths) for mutual TLS; both or none.
  std::string tls_cert;
  std::string tls_key;
  // Name the server's certificate must carry, instead of the target's host.
  std::string tls_server_name;
  // Bearer token (the value, not a path). Empty: no authorization header.
  std::string auth_token;

  // TLS is on when any tls_* field is set.
  bool UsesTls() const {
    return !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty() ||
           !tls_server_name.empty();
  }
};

// The channel credentials `security` asks for (insecure without TLS).
// Errors: INVALID_ARGUMENT/NOT_FOUND naming the flag and file when a PEM
// file is unreadable, malformed or the key does not match the certificate,
// or only one of tls_cert/tls_key is set.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ChannelSecurity& security);

// A channel to `target` with `args` plus the security settings (server name
// override, token interceptor). Does not connect. Errors as
// MakeChannelCredentials.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannel(
    const std::string& target, const ChannelSecurity& security,
    grpc::ChannelArguments args);

// A hint to append to the message of a failed call on a channel with
// `security`: TLS mismatches surface as UNAVAILABLE ("Socket closed",
// "handshake failed"), so for UNAVAILABLE this names the likely cause and
// the flag to fix it. Empty for other codes.
std::string ConnectionHint(absl::StatusCode code, absl::string_view message,
                           const ChannelSecurity& security);

// Reads the first token of `path` (the server's token-file format: blank
// lines and lines starting with '#' are skipped). Errors: NOT_FOUND if
// unreadable; INVALID_ARGUMENT if it holds no token.
absl::StatusOr<std::string> ReadAuthTokenFile(const std::string& path);

}  // namespace attn

#endif  // ATTNSERVE_CLIENT_CHANNEL_CREDENTIALS_H_
