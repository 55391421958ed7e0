// The listening credentials of attn_server: plaintext or TLS (with
// --tls_client_ca: mutual TLS, client certificates required and verified
// against that CA), plus, with a TokenStore, bearer-token authentication of
// every call except grpc.health.v1.Health/*.
//
//   ServerSecurity security;
//   security.tls = *ReadPemKeyPair(...);            // omit for plaintext
//   security.tokens = token_store;                  // omit for no tokens
//   builder.AddListeningPort(address, MakeServerCredentials(security, metrics),
//                            &port);
//
// Why the core API: the token check is a grpc_auth_metadata_processor, which
// runs in gRPC's server auth filter before any handler of any service
// (AttentionService, reflection, and services added later) and whose status
// ends the call. gRPC 1.51's C++ InsecureServerCredentials() cannot carry a
// processor (SetAuthMetadataProcessor asserts), and server interceptors
// cannot end a call with a status, so the credentials are built with the C
// API (grpc_insecure_server_credentials_create /
// grpc_ssl_server_credentials_create_ex) and wrapped in a
// grpc::ServerCredentials.
//
// Thread-safety: the processor is called concurrently by gRPC; it only reads
// the TokenStore (thread-safe) and adds to counters.
#ifndef ATTNSERVE_SERVER_API_SERVER_CREDENTIALS_H_
#define ATTNSERVE_SERVER_API_SERVER_CREDENTIALS_H_

#include <memory>
#include <optional>
#include <string>

#include "common/pem_files.h"
#include "grpcpp/security/server_credentials.h"
#include "server/observability/metrics.h"
#include "server/security/token_store.h"

namespace attn::server {

struct ServerSecurity {
  // Certificate chain and key of the server; nullopt = plaintext.
  std::optional<PemKeyPair> tls;
  // PEM CA bundle; non-empty = require client certificates signed by it.
  // REQUIRES: tls when non-empty.
  std::string client_ca;
  // Accepted bearer tokens; null = no token check.
  std::shared_ptr<TokenStore> tokens;  // Reload()ed by main on SIGHUP
};

// The path prefix of the methods that never need a token.
inline constexpr char kOpenMethodPrefix[] = "/grpc.health.v1.Health/";

// `metrics` (not owned, may be null) counts rejected calls; it must outlive
// the server the credentials are used by.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const ServerSecurity& security, ServerMetrics* metrics);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_SERVER_CREDENTIALS_H_
