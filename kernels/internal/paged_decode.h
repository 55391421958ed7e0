// The attention step of MultiHeadAttention::ForwardPaged
// (kernels/paged_attention.h): writes the new tokens' K/V into their pool
// slots, then attends every new query causally over its sequence's blocks,
// read in place (never copied).
//
// Work is cut into spans (paged_decode_hwy.h): one new token, its kv heads,
// a contiguous range of key positions. Each span computes all the query
// heads of each kv head's group from one pass over the range's blocks (GQA:
// every K/V block is read once per group), with an online (running max /
// sum) softmax in fp32. A call with at least four tokens per thread runs one
// span per token over all kv heads, so that each block is read as two
// contiguous runs (its K and V halves). With fewer tokens a span has one kv
// head, and when there are fewer (token, kv head) pairs than about four per
// thread (a few long sequences), each pair's keys are split into spans of
// at least kMinSpanKeys keys, run on different threads, and their partial
// (max, sum, weighted V) results merged. bf16 pools are
// rounded to nearest even when written and widened when read.
//
// Rotary embedding (rope.h): K is rotated at its absolute position while
// it is written into the pool (cached keys are never rotated again), Q
// while it is read. Sliding window: a query at position p reads only the
// keys p - window < j <= p (older blocks stay in the pool, unread).
//
// Thread-safety: stateless free functions; concurrent calls must not share
// pool blocks. Internal: not part of the public API.
#ifndef ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_H_
#define ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_H_

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/internal/kernel_isa.h"
#include "kernels/internal/paged_decode_hwy.h"
#include "kernels/internal/rope.h"
#include "kernels/paged_attention.h"

namespace attn::kernels::internal {

// Keys below which a (token, kv head) pair is not split over threads.
inline constexpr int64_t kMinSpanKeys = 256;

// The decode span for a layer whose flash core is `core`: the same Highway
// target for a Highway core, the best Highway target this CPU runs for
// the AVX-512 / AMX cores, null (the scalar span) for the scalar core.
DecodeSpanFn DecodeSpanFor(const CoreChoice& core);

// qkv: token-major rows [Q (num_heads*head_dim, already scaled) | K | V],
// `total` rows in `seqs` order; ctx: [total, num_heads*head_dim] output.
// REQUIRES: sequences and pool validated (block tables long enough, ids in
// range, layout matching num_kv_heads / head_dim).
// `window` 0: no sliding window. `span` null: the scalar span.
void PagedDecode(const float* qkv, absl::Span<const PagedSequence> seqs,
                 const KvPool& pool, int64_t num_heads, const Rope& rope,
                 int64_t window, DecodeSpanFn span, float* ctx);

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_H_
