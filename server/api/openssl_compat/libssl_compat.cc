// libssl compatibility object for Debian 12's civetweb 1.15 (REST over TLS).
//
// civetweb loads OpenSSL at run time: dlopen("libssl.so"), then dlsym() of
// each function of the OpenSSL 1.1 API. OpenSSL 3 dropped the symbol
// SSL_get_peer_certificate (it is now a macro for SSL_get1_peer_certificate),
// so civetweb's pointer stays null and its worker thread calls it on the
// first TLS connection. This shared object carries the SONAME "libssl.so" and
// depends on the real libssl.so.3. attn_server dlopen()s it by path before
// civetweb starts (server/api/http_tls.h); the dynamic loader then answers
// civetweb's dlopen("libssl.so") with this object (the name matches its
// SONAME), and civetweb's dlsym() finds every other function in libssl.so.3
// through this object's dependency, and the missing one here. It also makes
// REST TLS work where libssl-dev (the unversioned libssl.so) is absent, as
// in the runtime image.
//
// Thread-safety: stateless.
#include <openssl/ssl.h>
#include <openssl/x509.h>

#undef SSL_get_peer_certificate

extern "C" {

// OpenSSL 1.1's SSL_get_peer_certificate returned a new reference, which
// civetweb releases with X509_free: exactly SSL_get1_peer_certificate.
__attribute__((visibility("default"))) X509* SSL_get_peer_certificate(
    const SSL* ssl) {
  return SSL_get1_peer_certificate(ssl);
}

// What http_tls.cc looks up to check that it loaded this object.
__attribute__((visibility("default"))) unsigned long attn_openssl_compat_ssl(
    void) {
  return OpenSSL_version_num();
}

}  // extern "C"
