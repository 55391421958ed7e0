#include "client/loadgen/security_flags.h"

#include <string>
#include <utility>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_ca, "",
          "TLS: PEM CA bundle the server's certificate must chain to (empty "
          "with other --tls_* flags: the system roots)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate chain (mutual TLS; with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name the server's certificate must carry (default: the target's "
          "host)");
ABSL_FLAG(std::string, auth_token_file, "",
          "send 'authorization: Bearer <first token of this file>' on every "
          "call");

namespace attn::loadgen {

absl::StatusOr<ChannelSecurity> SecurityFromFlags() {
  ChannelSecurity security;
  security.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  security.tls_key = absl::GetFlag(FLAGS_tls_key);
  security.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  const std::string token_file = absl::GetFlag(FLAGS_auth_token_file);
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadAuthTokenFile(token_file);
    if (!token.ok()) return token.status();
    security.auth_token = *std::move(token);
  }
  // Reads and checks the files now, so that a bad one fails before any load.
  auto credentials = MakeChannelCredentials(security);
  if (!credentials.ok()) return credentials.status();
  return security;
}

}  // namespace attn::loadgen
