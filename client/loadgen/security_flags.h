// attn_loadgen's connection-security flags (--tls_ca, --tls_cert, --tls_key,
// --tls_server_name, --auth_token_file), defined apart from flags.cc.
//
// Thread-safety: call from main() only (reads absl flags).
#ifndef ATTNSERVE_CLIENT_LOADGEN_SECURITY_FLAGS_H_
#define ATTNSERVE_CLIENT_LOADGEN_SECURITY_FLAGS_H_

#include "absl/status/statusor.h"
#include "client/channel_credentials.h"

namespace attn::loadgen {

// The ChannelSecurity the flags ask for, with its files already read and
// checked. Errors: those of MakeChannelCredentials and ReadAuthTokenFile.
absl::StatusOr<ChannelSecurity> SecurityFromFlags();

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_SECURITY_FLAGS_H_
