// Warm-up of a loaded model before it serves: one forward pass per shape of
// its config.json "warmup" list (ModelConfig::warmup), so that the first
// real request of those shapes costs what later ones do (oneDNN primitives
// created and JIT-compiled, weights touched, scratch arenas grown).
//
//   absl::StatusOr<absl::Duration> took = WarmUp(*model, /*threads=*/2);
//
// The passes run on a thread of their own, once per OpenMP thread count the
// executor may give a call of that shape (CandidateThreads, see
// server/serving/kernel_threads.h: one thread and the team): oneDNN fixes a
// primitive's thread count when it is created, so primitives made here are
// the ones the executor will reuse.
//
// Thread-safety: may be called concurrently (Forward is const and
// thread-safe), but each call occupies `threads` cores while it runs.
#ifndef ATTNSERVE_SERVER_SERVING_WARMUP_H_
#define ATTNSERVE_SERVER_SERVING_WARMUP_H_

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/models/model_repository.h"

namespace attn::server {

// Runs every warm-up shape of `model` (self-attention with the model's
// default causality, deterministic inputs) and returns the time taken.
// Errors: the kernel's, prefixed with the model, version and shape.
// REQUIRES: threads >= 1.
absl::StatusOr<absl::Duration> WarmUp(const Model& model, int threads);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_WARMUP_H_
