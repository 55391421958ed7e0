// Masking of attention score rows: causal, key lengths, additive and boolean
// masks. Internal: not part of the public API.
//
// Thread-safety: stateless; safe to call concurrently on disjoint rows.
#ifndef ATTNSERVE_KERNELS_INTERNAL_MASKING_H_
#define ATTNSERVE_KERNELS_INTERNAL_MASKING_H_

#include <cstdint>

#include "kernels/attention.h"

namespace attn::kernels::internal {

// Everything that masks scores, as given in AttentionInput.
struct MaskSpec {
  bool causal = false;
  const int32_t* key_lengths = nullptr;  // [batch] or nullptr
  MaskKind kind = MaskKind::kNone;
  const void* mask = nullptr;  // [q_len, kv_len] or [batch, q_len, kv_len]
  bool per_batch = false;
};

// Applies the mask of query position `i` of batch item `b` to `num_rows`
// score rows of length `kv_len` (one per head, `row_stride` floats apart):
// masked entries become -inf, additive mask values are added.
// Returns true if every key of the row is masked (the caller then writes
// zero weights instead of running the softmax on an all -inf row).
// REQUIRES: 0 <= b < batch, 0 <= i < q_len, key_lengths within [0, kv_len].
bool ApplyRowMask(const MaskSpec& spec, int64_t b, int64_t i, int64_t q_len,
                  int64_t kv_len, float* scores, int64_t num_rows,
                  int64_t row_stride);

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_MASKING_H_
