// attn::Client over TLS, mutual TLS and bearer tokens against real
// attn_server processes. The PKI is generated at test time with openssl (by
// tests/integration/tls_certs.py). Also unit tests of TokenStore parsing
// and the constant-time comparison.
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/attn_client.h"
#include "gtest/gtest.h"
#include "server/security/token_store.h"
#include "tests/integration/server_process.h"

#ifndef ATTN_SERVER_PATH
#error "ATTN_SERVER_PATH must be defined by CMake"
#endif
#ifndef ATTN_TLS_CERTS_PY
#error "ATTN_TLS_CERTS_PY must be defined by CMake"
#endif

namespace attn {
namespace {

constexpr char kToken[] = "cpp-token-5d1e0f9a";
constexpr char kServerName[] = "attn.test";  // SAN of server.pem

absl::Time Deadline() { return absl::Now() + absl::Seconds(10); }

v1::AttendRequest DemoRequest() {
  v1::AttendRequest request;
  request.set_model("demo");
  std::vector<float> values(3 * 256);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = static_cast<float>((i * 37) % 101) / 101.0f - 0.5f;
  }
  *request.mutable_query() = *MakeTensor(values, {1, 3, 256});
  return request;
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/attn_security_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = new std::string(pattern);
    const std::string command = absl::StrCat(
        "/usr/bin/python3 ", ATTN_TLS_CERTS_PY, " ", *dir_, "/pki");
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    {
      std::ofstream tokens(*dir_ + "/tokens");
      tokens << "# test tokens\n" << kToken << "\n";
    }
    server_ = new testing::ServerProcess;
    absl::StatusOr<std::string> target = server_->Start(
        ATTN_SERVER_PATH,
        {"--metrics_port=0", "--tls_cert=" + Pki("server.pem"),
         "--tls_key=" + Pki("server.key"), "--tls_client_ca=" + Pki("ca.pem"),
         "--auth_token_file=" + *dir_ + "/tokens"},
        absl::Seconds(60));
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = new std::string(*target);
  }

  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      absl::StatusOr<int> code = server_->Stop(absl::Seconds(30));
      EXPECT_TRUE(code.ok()) << code.status();
      if (code.ok()) EXPECT_EQ(*code, 0);
      delete server_;
      server_ = nullptr;
    }
    if (dir_ != nullptr) {
      std::system(absl::StrCat("rm -rf ", *dir_).c_str());
      delete dir_;
      dir_ = nullptr;
    }
    delete target_;
    target_ = nullptr;
  }

  static std::string Pki(const std::string& name) {
    return absl::StrCat(*dir_, "/pki/", name);
  }

  // mTLS with the good client certificate and the token.
  static ClientOptions Good() {
    ClientOptions options;
    options.security.tls_ca = Pki("ca.pem");
    options.security.tls_cert = Pki("client.pem");
    options.security.tls_key = Pki("client.key");
    options.security.auth_token = kToken;
    return options;
  }

  // The status of GetModel("demo") with `options`.
  static absl::Status Call(const ClientOptions& options) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create(*target_, options);
    if (!client.ok()) return client.status();
    return (*client)->GetModel("demo", 0, Deadline()).status();
  }

  static std::string* dir_;
  static std::string* target_;
  static testing::ServerProcess* server_;
};

std::string* SecurityTest::dir_ = nullptr;
std::string* SecurityTest::target_ = nullptr;
testing::ServerProcess* SecurityTest::server_ = nullptr;

TEST_F(SecurityTest, MutualTlsWithTokenWorks) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(*target_, Good());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<v1::AttendResponse> response =
      (*client)->Attend(DemoRequest(), Deadline());
  ASSERT_TRUE(response.ok()) << response.status();
  absl::StatusOr<std::vector<float>> out = TensorToFloats(response->output());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), 3u * 256u);
  ClientOptions named = Good();
  named.security.tls_server_name = kServerName;
  EXPECT_TRUE(Call(named).ok()) << Call(named);
}

TEST_F(SecurityTest, HealthNeedsNoToken) {
  ClientOptions options = Good();
  options.security.auth_token.clear();
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(*target_, options);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<HealthStatus> health = (*client)->Health("", Deadline());
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kServing);
  EXPECT_EQ(Call(options).code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(SecurityTest, UnknownTokenIsPermissionDenied) {
  ClientOptions options = Good();
  options.security.auth_token = "not-a-known-token";
  const absl::Status status = Call(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_EQ(status.message().find("not-a-known-token"), std::string::npos);
}

TEST_F(SecurityTest, TransportFailuresAreUnavailable) {
  ClientOptions plaintext;
  plaintext.security.auth_token = kToken;
  ClientOptions no_cert = Good();
  no_cert.security.tls_cert.clear();
  no_cert.security.tls_key.clear();
  ClientOptions other_ca_cert = Good();
  other_ca_cert.security.tls_cert = Pki("other_client.pem");
  other_ca_cert.security.tls_key = Pki("other_client.key");
  ClientOptions other_ca_trust = Good();
  other_ca_trust.security.tls_ca = Pki("other_ca.pem");
  ClientOptions wrong_name = Good();
  wrong_name.security.tls_server_name = "wrong.example";
  for (const auto& [name, options] :
       std::vector<std::pair<std::string, ClientOptions>>{
           {"plaintext", plaintext},
           {"no client certificate", no_cert},
           {"client certificate of another CA", other_ca_cert},
           {"server certificate not signed by tls_ca", other_ca_trust},
           {"wrong server name", wrong_name}}) {
    const absl::Status status = Call(options);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable)
        << name << ": " << status;
    EXPECT_FALSE(
        ConnectionHint(status.code(), status.message(), options.security)
            .empty())
        << name;
  }
}

TEST_F(SecurityTest, BadClientFilesFailAtCreate) {
  ClientOptions mismatched = Good();
  mismatched.security.tls_key = Pki("other_client.key");
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create(*target_, mismatched);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(client.status().message().find("is not the private key"),
            std::string::npos)
      << client.status();
  ClientOptions missing = Good();
  missing.security.tls_ca = Pki("missing.pem");
  client = Client::Create(*target_, missing);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kNotFound);
  ClientOptions half = Good();
  half.security.tls_key.clear();
  EXPECT_EQ(Client::Create(*target_, half).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- TokenStore (no gRPC) ---------------------------------------------------

using server::AuthResult;
using server::ConstantTimeEquals;
using server::TokenStore;

TEST(TokenStoreTest, ParsesCommentsAndBlankLines) {
  auto tokens = TokenStore::Parse("# c\n\n  a1 \r\nb2\n#x y\n", "f");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(*tokens, (std::vector<std::string>{"a1", "b2"}));
  auto bad = TokenStore::Parse("a1\nb 2\n", "f");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos);
  EXPECT_EQ(bad.status().message().find("b 2"), std::string::npos);
}

TEST(TokenStoreTest, ChecksHeaders) {
  char pattern[] = "/tmp/attn_token_store.XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string path = std::string(pattern) + "/tokens";
  { std::ofstream(path) << "alpha\nbeta\n"; }
  auto store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Check(std::nullopt), AuthResult::kMissing);
  EXPECT_EQ((*store)->Check("Bearer alpha"), AuthResult::kOk);
  EXPECT_EQ((*store)->Check("bearer beta"), AuthResult::kOk);
  EXPECT_EQ((*store)->Check("Bearer alph"), AuthResult::kUnknownToken);
  EXPECT_EQ((*store)->Check("Bearer alphaa"), AuthResult::kUnknownToken);
  EXPECT_EQ((*store)->Check("Bearer "), AuthResult::kMalformed);
  EXPECT_EQ((*store)->Check("Basic alpha"), AuthResult::kMalformed);
  EXPECT_EQ((*store)->Check("alpha"), AuthResult::kMalformed);
  EXPECT_EQ((*store)->Check("Bearer a b"), AuthResult::kMalformed);
  EXPECT_EQ((*store)->Check("Bearer alpha", 2), AuthResult::kMalformed);
  { std::ofstream(path) << "gamma\n"; }
  ASSERT_TRUE((*store)->Reload().ok());
  EXPECT_EQ((*store)->Check("Bearer alpha"), AuthResult::kUnknownToken);
  EXPECT_EQ((*store)->Check("Bearer gamma"), AuthResult::kOk);
  std::remove(path.c_str());
  EXPECT_FALSE((*store)->Reload().ok());
  EXPECT_EQ((*store)->Check("Bearer gamma"), AuthResult::kOk);
  rmdir(pattern);
}

TEST(TokenStoreTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcabc"));  // wraps, still differs
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_FALSE(ConstantTimeEquals("a", ""));
}

}  // namespace
}  // namespace attn
