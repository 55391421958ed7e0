// The command-line flags of attn_loadgen (absl flags, defined in flags.cc)
// and their conversion to Options.
#ifndef ATTNSERVE_CLIENT_LOADGEN_FLAGS_H_
#define ATTNSERVE_CLIENT_LOADGEN_FLAGS_H_

#include "absl/status/statusor.h"
#include "client/loadgen/options.h"

namespace attn::loadgen {

// Reads the parsed flags. Errors: INVALID_ARGUMENT naming the flag.
absl::StatusOr<Options> OptionsFromFlags();

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_FLAGS_H_
