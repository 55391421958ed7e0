// Scheduling priority of the calling thread (Linux nice value, per thread).
//
// The executor runs compute at a lower priority than gRPC's threads, so that
// when the CPU is saturated the threads that answer health probes, reject
// excess requests and decode the next batch are scheduled first (they need
// little CPU; compute takes whatever is left). Threads the executor creates
// afterwards (its OpenMP team) inherit its nice value.
//
// Thread-safety: affects only the calling thread; safe from any thread.
#ifndef ATTN_SERVER_SERVING_THREAD_PRIORITY_H_
#define ATTN_SERVER_SERVING_THREAD_PRIORITY_H_

#include "absl/status/status.h"

namespace attn::server {

// Adds `increment` (1..19) to the calling thread's nice value. Lowering a
// priority needs no privilege. Errors: INVALID_ARGUMENT for an increment out
// of range; INTERNAL when the kernel refuses (errno text).
absl::Status LowerCurrentThreadPriority(int increment);

// The calling thread's nice value.
int CurrentThreadNice();

}  // namespace attn::server

#endif  // ATTN_SERVER_SERVING_THREAD_PRIORITY_H_
