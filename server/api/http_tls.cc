#include "server/api/http_tls.h"

#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attn::server {
namespace {

std::string ExecutableDir() {
  std::vector<char> buf(4096);
  const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return ".";
  std::string path(buf.data(), static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Loads `file` from the candidate directories; on failure appends what each
// attempt said to `tried`.
void* LoadCompat(const std::vector<std::string>& dirs, const char* file,
                 std::vector<std::string>* tried) {
  for (const std::string& dir : dirs) {
    const std::string path = absl::StrCat(dir, "/", file);
    if (void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      return handle;
    }
    const char* why = dlerror();
    tried->push_back(why != nullptr ? why : path);
  }
  return nullptr;
}

absl::Status Load() {
  const std::string exe_dir = ExecutableDir();
  const std::vector<std::string> dirs = {exe_dir,
                                         exe_dir + "/../lib/attnserve"};
  std::vector<std::string> tried;
  void* crypto = LoadCompat(dirs, kLibcryptoCompat, &tried);
  void* ssl =
      crypto == nullptr ? nullptr : LoadCompat(dirs, kLibsslCompat, &tried);
  if (ssl == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "REST over TLS needs OpenSSL compatibility objects for civetweb "
        "next to attn_server (",
        kLibsslCompat, ", ", kLibcryptoCompat,
        "; see docs/ARCHITECTURE.md): ", absl::StrJoin(tried, "; ")));
  }
  // civetweb asks for these names; they must now resolve to ours.
  const struct {
    const char* name;
    const char* marker;
  } checks[] = {{"libssl.so", "attn_openssl_compat_ssl"},
                {"libcrypto.so", "attn_openssl_compat_crypto"}};
  for (const auto& check : checks) {
    void* handle = dlopen(check.name, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr || dlsym(handle, check.marker) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "REST over TLS: dlopen(\"", check.name,
          "\") does not resolve to attnserve's compatibility object; civetweb "
          "would crash on OpenSSL 3"));
    }
    dlclose(handle);  // drops the reference taken above only
  }
  return absl::OkStatus();
}

std::string OpenSslError() {
  std::vector<std::string> reasons;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    reasons.push_back(buf);
  }
  return reasons.empty() ? "unknown OpenSSL error"
                         : absl::StrJoin(reasons, "; ");
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate of a PEM bundle; the caller owns them.
std::vector<X509*> ReadCertificates(const std::string& pem) {
  std::vector<X509*> certs;
  BioPtr bio = MemoryBio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.push_back(cert);
  }
  ERR_clear_error();  // the end of the bundle reads as an error
  return certs;
}

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("REST TLS setup: ", what, ": ", OpenSslError()));
}

}  // namespace

absl::Status LoadCivetwebOpenSsl() {
  static absl::once_flag once;
  static absl::Status* status = nullptr;
  absl::call_once(once, [] { status = new absl::Status(Load()); });
  return *status;
}

absl::Status ConfigureHttpTls(const ServerSecurity& security, void* ssl_ctx) {
  SSL_CTX* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  ERR_clear_error();
  std::vector<X509*> chain = ReadCertificates(security.tls->certificate_chain);
  if (chain.empty()) return Invalid("no certificate in --tls_cert");
  const int used = SSL_CTX_use_certificate(ctx, chain[0]);
  X509_free(chain[0]);
  bool chain_ok = used == 1;
  for (size_t i = 1; i < chain.size(); ++i) {
    // add0 takes ownership on success only.
    if (!chain_ok || SSL_CTX_add0_chain_cert(ctx, chain[i]) != 1) {
      X509_free(chain[i]);
      chain_ok = false;
    }
  }
  if (!chain_ok) return Invalid("cannot use the --tls_cert chain");
  BioPtr key_bio = MemoryBio(security.tls->private_key);
  EVP_PKEY* key =
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) return Invalid("cannot read --tls_key");
  const int key_used = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (key_used != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return Invalid("--tls_key does not match --tls_cert");
  }
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return Invalid("cannot require TLS 1.2");
  }
  static const unsigned char kSessionContext[] = "attnserve-rest";
  SSL_CTX_set_session_id_context(ctx, kSessionContext,
                                 sizeof(kSessionContext) - 1);
  if (!security.client_ca.empty()) {
    std::vector<X509*> cas = ReadCertificates(security.client_ca);
    if (cas.empty()) return Invalid("no certificate in --tls_client_ca");
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    bool ca_ok = true;
    for (X509* ca : cas) {
      ca_ok = ca_ok && X509_STORE_add_cert(store, ca) == 1 &&
              SSL_CTX_add_client_CA(ctx, ca) == 1;
      X509_free(ca);  // both calls take their own reference
    }
    if (!ca_ok) return Invalid("cannot use --tls_client_ca");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
  }
  return absl::OkStatus();
}

}  // namespace attn::server
