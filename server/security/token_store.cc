#include "server/security/token_store.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attn::server {
namespace {

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string message = absl::StrCat(
        "--auth_token_file=", path, ": cannot read (", std::strerror(err), ")");
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::NotFoundError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool HasWhitespace(absl::string_view s) {
  for (char c : s) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return true;
  }
  return false;
}

}  // namespace

const char* AuthResultReason(AuthResult result) {
  switch (result) {
    case AuthResult::kOk:
      return "ok";
    case AuthResult::kMissing:
      return "missing";
    case AuthResult::kMalformed:
      return "malformed";
    case AuthResult::kUnknownToken:
      return "unknown_token";
  }
  return "unknown_token";
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Walks the longer length; indexes wrap so that no read is out of range.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = a.empty() ? 0 : a[i % a.size()];
    const unsigned char y = b.empty() ? 0 : b[i % b.size()];
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<std::vector<std::string>> TokenStore::Parse(
    absl::string_view text, absl::string_view source) {
  std::vector<std::string> tokens;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    if (HasWhitespace(line)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, " line ", line_number,
                       ": a token may not contain whitespace (one token per "
                       "line; '#' starts a comment line)"));
    }
    tokens.emplace_back(line);
  }
  return tokens;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(std::string path) {
  std::unique_ptr<TokenStore> store(new TokenStore(std::move(path)));
  absl::StatusOr<std::string> text = ReadTokenFile(store->path_);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<std::string>> tokens =
      Parse(*text, absl::StrCat("--auth_token_file=", store->path_));
  if (!tokens.ok()) return tokens.status();
  if (tokens->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--auth_token_file=", store->path_,
        " holds no token (one token per line; blank and '#' lines are "
        "ignored)"));
  }
  absl::MutexLock lock(&store->mu_);
  store->tokens_ =
      std::make_shared<const std::vector<std::string>>(std::move(*tokens));
  return store;
}

absl::Status TokenStore::Reload() {
  absl::StatusOr<std::string> text = ReadTokenFile(path_);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<std::string>> tokens =
      Parse(*text, absl::StrCat("--auth_token_file=", path_));
  if (!tokens.ok()) return tokens.status();
  auto next =
      std::make_shared<const std::vector<std::string>>(std::move(*tokens));
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(next);
  return absl::OkStatus();
}

int TokenStore::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(tokens_->size());
}

AuthResult TokenStore::Check(std::optional<absl::string_view> authorization,
                             int header_count) const {
  if (!authorization.has_value() || header_count == 0) {
    return AuthResult::kMissing;
  }
  if (header_count > 1) return AuthResult::kMalformed;
  // RFC 6750: "Bearer" (case-insensitive), one space, a token of no spaces.
  constexpr absl::string_view kScheme = "bearer ";
  absl::string_view value = *authorization;
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return AuthResult::kMalformed;
  }
  const absl::string_view token = value.substr(kScheme.size());
  if (HasWhitespace(token)) return AuthResult::kMalformed;
  std::shared_ptr<const std::vector<std::string>> tokens;
  {
    absl::MutexLock lock(&mu_);
    tokens = tokens_;
  }
  bool found = false;
  for (const std::string& known : *tokens) {
    found = ConstantTimeEquals(token, known) || found;  // no early exit
  }
  return found ? AuthResult::kOk : AuthResult::kUnknownToken;
}

}  // namespace attn::server
