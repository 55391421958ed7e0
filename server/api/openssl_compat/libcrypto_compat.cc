// libcrypto compatibility object for Debian 12's civetweb 1.15: carries the
// SONAME "libcrypto.so" and depends on the real libcrypto.so.3, so that
// civetweb's dlopen("libcrypto.so") finds OpenSSL 3's libcrypto even where
// libssl-dev (the unversioned name) is not installed, as in the runtime
// image. See libssl_compat.cc for how it is loaded.
//
// Thread-safety: stateless.
#include <openssl/crypto.h>

extern "C" {

// What http_tls.cc looks up to check that it loaded this object; it also
// keeps the dependency on libcrypto.so.3 (linked --as-needed).
__attribute__((visibility("default"))) unsigned long attn_openssl_compat_crypto(
    void) {
  return OpenSSL_version_num();
}

}  // extern "C"
