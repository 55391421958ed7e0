#include "common/pem_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attn {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

absl::StatusOr<std::string> ReadFile(absl::string_view flag,
                                     const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " is empty"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    const std::string why = std::strerror(err);
    const std::string message =
        absl::StrCat(flag, "=", path, ": cannot read (", why, ")");
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::NotFoundError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) {
    return absl::DataLossError(absl::StrCat(flag, "=", path, ": read failed"));
  }
  return text.str();
}

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(
      BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate of `pem`, or null.
std::unique_ptr<X509, X509Free> FirstCertificate(const std::string& pem) {
  auto bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  return cert;
}

}  // namespace

absl::StatusOr<std::string> ReadPemCertificates(absl::string_view flag,
                                                const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(flag, path);
  if (!text.ok()) return text.status();
  if (FirstCertificate(*text) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path,
                     ": no PEM certificate in the file (expected "
                     "-----BEGIN CERTIFICATE-----)"));
  }
  return text;
}

absl::StatusOr<PemKeyPair> ReadPemKeyPair(absl::string_view cert_flag,
                                          const std::string& cert_path,
                                          absl::string_view key_flag,
                                          const std::string& key_path) {
  PemKeyPair pair;
  absl::StatusOr<std::string> cert = ReadPemCertificates(cert_flag, cert_path);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFile(key_flag, key_path);
  if (!key.ok()) return key.status();
  auto bio = MemoryBio(*key);
  std::unique_ptr<EVP_PKEY, KeyFree> pkey(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_path,
                     ": no unencrypted PEM private key in the file (expected "
                     "-----BEGIN PRIVATE KEY----- or similar)"));
  }
  std::unique_ptr<X509, X509Free> x509 = FirstCertificate(*cert);
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_flag, "=", key_path, " is not the private key of ",
                     cert_flag, "=", cert_path, " (the key does not match)"));
  }
  pair.certificate_chain = std::move(*cert);
  pair.private_key = std::move(*key);
  return pair;
}

}  // namespace attn
