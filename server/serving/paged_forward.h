// The one call from the serving layer into the paged (session) kernel:
// adapts SessionTable's pool view and block tables to
// kernels::MultiHeadAttention::ForwardPaged.
//
// Free function, no state: thread-safe as the kernel is.
#ifndef ATTNSERVE_SERVER_SERVING_PAGED_FORWARD_H_
#define ATTNSERVE_SERVER_SERVING_PAGED_FORWARD_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "server/models/model_repository.h"
#include "server/serving/kv_cache.h"

namespace attn::server {

// One session's tokens in a paged call: positions start_position ..
// start_position + new_tokens - 1, whose blocks (at least ceil((start +
// new) / block_tokens) of them) are `block_table`.
struct PagedChunk {
  int64_t start_position = 0;
  int64_t new_tokens = 0;
  const int32_t* block_table = nullptr;
  int64_t num_blocks = 0;
};

// x: [sum new_tokens, d_model] (the chunks' tokens, in order); out: the same
// shape. Writes the new tokens' K/V into their blocks and attends causally
// over each session's cached and new tokens.
absl::Status RunPagedForward(const Model& model, const float* x,
                             absl::Span<const PagedChunk> chunks,
                             const KvPoolView& pool, float* out);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_PAGED_FORWARD_H_
