#include "server/api/server_credentials.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace attn::server {
namespace {

absl::string_view View(const grpc_slice& slice) {
  return absl::string_view(
      reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
      GRPC_SLICE_LENGTH(slice));
}

// State of the auth metadata processor (owned by the core credentials).
struct TokenCheck {
  std::shared_ptr<const TokenStore> tokens;
  ServerMetrics* metrics = nullptr;
};

// Messages of rejected calls. They never contain the presented token.
const char* RejectionMessage(AuthResult result) {
  switch (result) {
    case AuthResult::kMissing:
      return "missing 'authorization' metadata: this server requires "
             "'authorization: Bearer <token>' on every call except "
             "grpc.health.v1";
    case AuthResult::kMalformed:
      return "malformed 'authorization' metadata: expected exactly one "
             "'Bearer <token>' value";
    case AuthResult::kUnknownToken:
      return "the bearer token is not accepted by this server (unknown or "
             "revoked token)";
    case AuthResult::kOk:
      break;
  }
  return "";
}

void ProcessMetadata(void* state, grpc_auth_context* /*context*/,
                     const grpc_metadata* md, size_t num_md,
                     grpc_process_auth_metadata_done_cb cb, void* user_data) {
  const auto* check = static_cast<const TokenCheck*>(state);
  std::optional<absl::string_view> authorization;
  int authorization_count = 0;
  bool open_method = false;
  for (size_t i = 0; i < num_md; ++i) {
    const absl::string_view key = View(md[i].key);
    if (key == ":path") {
      open_method = absl::StartsWith(View(md[i].value), kOpenMethodPrefix);
    } else if (key == "authorization") {
      ++authorization_count;
      authorization = View(md[i].value);
    }
  }
  if (open_method) {
    cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  const AuthResult result =
      check->tokens->Check(authorization, authorization_count);
  if (result == AuthResult::kOk) {
    // Not consumed: the session table scopes session ids by the caller's
    // token (server/api/session_requests.h, SessionScope). Handlers use it
    // only as that in-memory key; nothing logs or returns metadata. (The
    // auth context cannot carry a caller identity instead: gRPC shares one
    // per connection, and a property added per call would accumulate.)
    cb(user_data, nullptr, 0, nullptr, 0, GRPC_STATUS_OK, nullptr);
    return;
  }
  if (check->metrics != nullptr) check->metrics->AuthRejected(result);
  cb(user_data, nullptr, 0, nullptr, 0,
     result == AuthResult::kUnknownToken ? GRPC_STATUS_PERMISSION_DENIED
                                         : GRPC_STATUS_UNAUTHENTICATED,
     RejectionMessage(result));
}

void DestroyTokenCheck(void* state) { delete static_cast<TokenCheck*>(state); }

// A grpc::ServerCredentials around core credentials (owns one reference).
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  explicit CoreServerCredentials(grpc_server_credentials* creds)
      : creds_(creds) {}
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/)
      override {
    // Not used: MakeServerCredentials installs the core processor.
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }

  grpc_server_credentials* const creds_;
};

}  // namespace

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const ServerSecurity& security, ServerMetrics* metrics) {
  grpc_server_credentials* creds = nullptr;
  if (security.tls.has_value()) {
    grpc_ssl_pem_key_cert_pair pair = {security.tls->private_key.c_str(),
                                       security.tls->certificate_chain.c_str()};
    const bool mutual = !security.client_ca.empty();
    creds = grpc_ssl_server_credentials_create_ex(
        mutual ? security.client_ca.c_str() : nullptr, &pair, 1,
        mutual ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        nullptr);
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  if (security.tokens != nullptr) {
    grpc_auth_metadata_processor processor;
    processor.process = ProcessMetadata;
    processor.destroy = DestroyTokenCheck;
    processor.state = new TokenCheck{security.tokens, metrics};
    grpc_server_credentials_set_auth_metadata_processor(creds, processor);
  }
  return std::make_shared<CoreServerCredentials>(creds);
}

}  // namespace attn::server
