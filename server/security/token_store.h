// TokenStore: the bearer tokens attn_server accepts, read from a file (one
// token per line; blank lines and lines starting with '#' are ignored) and
// re-read on demand (attn_server calls Reload() on SIGHUP). Free of gRPC so
// that any transport (the gRPC auth processor, an HTTP endpoint) can use it.
//
//   auto store = TokenStore::Load("/etc/attn/tokens");
//   if (!store.ok()) ...;                       // message names file and line
//   AuthResult r = (*store)->Check(authorization_header_or_null);
//   if (r != AuthResult::kOk) reject(AuthResultReason(r));
//
// Check() compares the presented token with every known token in constant
// time (no early exit, the work does not depend on where they differ).
// Nothing here ever logs or returns a token; error messages name only the
// file and line numbers.
//
// Thread-safety: Check() and Reload() may be called concurrently from any
// thread; a Check() sees either the old or the new set, never a mix.
#ifndef ATTNSERVE_SERVER_SECURITY_TOKEN_STORE_H_
#define ATTNSERVE_SERVER_SECURITY_TOKEN_STORE_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace attn::server {

// Outcome of checking an `authorization` header.
enum class AuthResult {
  kOk,
  kMissing,       // no authorization header
  kMalformed,     // not "Bearer <token>" (or several headers)
  kUnknownToken,  // well-formed, but not a known token
};

// Label of a rejection: "missing", "malformed", "unknown_token"; "ok".
const char* AuthResultReason(AuthResult result);

class TokenStore {
 public:
  // Reads `path`. Errors: NOT_FOUND/PERMISSION_DENIED if unreadable;
  // INVALID_ARGUMENT if a line holds whitespace inside a token, or the file
  // holds no token at all.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(std::string path);

  // Tokens parsed from `text` (the file format). Errors as Load(), naming
  // `source`. An empty set is OK here.
  static absl::StatusOr<std::vector<std::string>> Parse(
      absl::string_view text, absl::string_view source);

  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  // Re-reads the file. On error the current tokens stay in force. A file
  // with no tokens is accepted (every call is then refused).
  absl::Status Reload();

  // Checks the value of the `authorization` header; nullopt = no header,
  // `header_count` > 1 is malformed.
  AuthResult Check(std::optional<absl::string_view> authorization,
                   int header_count = 1) const;

  // Number of tokens in force.
  int size() const;

  const std::string& path() const { return path_; }

 private:
  explicit TokenStore(std::string path) : path_(std::move(path)) {}

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<std::string>> tokens_ ABSL_GUARDED_BY(mu_);
};

// True iff a == b, in time that depends on the lengths only.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SECURITY_TOKEN_STORE_H_
