// PEM files for TLS: reads a certificate chain, a private key or a CA bundle
// from disk and checks them with OpenSSL before gRPC sees them, so that a
// bad file is an error naming the file and the problem at start-up rather
// than a failed handshake later. Shared by attn_server and the clients.
//
//   absl::StatusOr<PemKeyPair> pair = ReadPemKeyPair("--tls_cert", cert_path,
//                                                   "--tls_key", key_path);
//   absl::StatusOr<std::string> ca = ReadPemCertificates("--tls_ca", ca_path);
//
// Error messages name the flag and the path, never file contents.
// Thread-safety: the functions are thread-safe (no shared state).
#ifndef ATTNSERVE_COMMON_PEM_FILES_H_
#define ATTNSERVE_COMMON_PEM_FILES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attn {

// A certificate chain and the private key of its first certificate.
struct PemKeyPair {
  std::string certificate_chain;
  std::string private_key;
};

// Reads `path` (named `flag` in errors) as one or more PEM certificates.
// Errors: NOT_FOUND / PERMISSION_DENIED if it cannot be read;
// INVALID_ARGUMENT if it holds no parseable certificate.
absl::StatusOr<std::string> ReadPemCertificates(absl::string_view flag,
                                                const std::string& path);

// Reads a certificate chain and its private key and checks that the key
// belongs to the first certificate. Errors as ReadPemCertificates, and
// INVALID_ARGUMENT if the key cannot be parsed or does not match.
absl::StatusOr<PemKeyPair> ReadPemKeyPair(absl::string_view cert_flag,
                                          const std::string& cert_path,
                                          absl::string_view key_flag,
                                          const std::string& key_path);

}  // namespace attn

#endif  // ATTNSERVE_COMMON_PEM_FILES_H_
