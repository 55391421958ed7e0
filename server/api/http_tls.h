// TLS for the REST port (civetweb 1.15 as packaged by Debian 12, on
// OpenSSL 3).
//
//   RETURN_IF_ERROR(LoadCivetwebOpenSsl());      // before mg_start
//   callbacks.init_ssl = ...;  // calls ConfigureHttpTls(security, ssl_ctx)
//
// civetweb loads OpenSSL at run time with the 1.1 API table; one function of
// it (SSL_get_peer_certificate) is gone from OpenSSL 3, and civetweb calls
// the null pointer on the first TLS connection. LoadCivetwebOpenSsl loads
// two small compatibility objects shipped next to attn_server
// (openssl_compat/), which the dynamic loader then hands to civetweb for
// "libssl.so" and "libcrypto.so". ConfigureHttpTls sets up civetweb's
// SSL_CTX itself, from the same certificates, key and client CA bundle as
// the gRPC port, so that both ports behave alike (TLS 1.2 or later; with a
// client CA, a verified client certificate is required).
//
// Thread-safety: LoadCivetwebOpenSsl is thread-safe and idempotent.
// ConfigureHttpTls touches only the SSL_CTX it is given.
#ifndef ATTNSERVE_SERVER_API_HTTP_TLS_H_
#define ATTNSERVE_SERVER_API_HTTP_TLS_H_

#include "absl/status/status.h"
#include "server/api/server_credentials.h"

namespace attn::server {

// File names of the compatibility objects (built into the directory of
// attn_server; the image installs them in /usr/local/lib/attnserve).
inline constexpr char kLibsslCompat[] = "libattn_openssl_compat_ssl.so";
inline constexpr char kLibcryptoCompat[] = "libattn_openssl_compat_crypto.so";

// Loads the compatibility objects from the executable's directory, else
// from <executable dir>/../lib/attnserve, and checks that civetweb's
// dlopen("libssl.so") will resolve to them. Errors: FAILED_PRECONDITION
// naming the paths tried and the loader's message.
absl::Status LoadCivetwebOpenSsl();

// Configures `ssl_ctx` (an OpenSSL SSL_CTX*) from `security`.
// REQUIRES: security.tls. Errors: INVALID_ARGUMENT with OpenSSL's reason.
absl::Status ConfigureHttpTls(const ServerSecurity& security, void* ssl_ctx);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_HTTP_TLS_H_
