// The vector unit of the paged decode kernel (paged_decode.h), written once
// with Google Highway (paged_decode_hwy.cc) and compiled for the same
// targets as the flash core's Highway unit (flash_hwy.h): AVX-512, AVX2+FMA
// and SSE4 on x86-64, NEON on aarch64, EMU128.
//
// A span is the work of one query token for one or more kv heads over a
// contiguous range of its sequence's key positions: the dot products of the
// group's query heads with each key block (every K and V row is read once for
// all the heads of the group: GQA), an online softmax per chunk of blocks,
// and the weighted sum of the V rows. It returns the unnormalised partial
// result (running max, sum of exponentials, weighted V sum), so that the
// caller can split a long sequence's keys over threads and merge the parts.
//
// Internal: not part of the public API. Thread-safety: the table is
// immutable after static initialisation; spans are reentrant and write
// only their outputs and scratch.
#ifndef ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_HWY_H_
#define ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_HWY_H_

#include <cstdint>

#include "kernels/paged_attention.h"

namespace attn::kernels::internal {

// The inputs of one span. q: num_kv * group query rows of head_dim floats
// (scaled and rotated), the heads of kv heads kv_head .. kv_head + num_kv - 1
// (group rows each); keys [first, last) of the sequence whose blocks are
// `block_table` (last > first). Several kv heads per span read each block's
// K (and V) half as one contiguous run of num_kv * head_dim * block_tokens
// elements instead of pieces of it.
struct DecodeSpan {
  const float* q;
  int64_t group;
  const int32_t* block_table;
  int64_t kv_head;
  int64_t num_kv;
  int64_t first;
  int64_t last;
};

// The partial result of a span, for its R = num_kv * group query heads:
// m[R] the running max of the scores, l[R] the sum of exp(score - m),
// acc[R][head_dim] the sum of exp(score - m) * V. scratch: at least
// DecodeScratchFloats(R, layout) floats.
struct DecodePartial {
  float* m;
  float* l;
  float* acc;
  float* scratch;
};

// Floats per query head's row of scores for one block (whole vectors).
inline int64_t DecodeScoreStride(const KvPoolLayout& l) {
  return (l.block_tokens + 15) / 16 * 16;
}
// Blocks whose scores a span computes before one softmax step (about 256
// keys: the scores of 16 query heads then take 16 KiB, within L1).
inline int64_t DecodeChunkBlocks(const KvPoolLayout& l) {
  return l.block_tokens >= 256 ? 1 : 256 / l.block_tokens;
}
// Floats per query head's row of scores for one chunk (whole vectors).
inline int64_t DecodeChunkStride(const KvPoolLayout& l) {
  return (DecodeChunkBlocks(l) * l.block_tokens + 15) / 16 * 16;
}
// Scratch floats of a span with `rows` query heads (num_kv * group).
inline int64_t DecodeScratchFloats(int64_t rows, const KvPoolLayout& l) {
  return rows * DecodeChunkStride(l);
}

using DecodeSpanFn = void (*)(const KvPool& pool, const DecodeSpan& span,
                              const DecodePartial& out);

// The span of Highway target `hwy_target` (Highway's bit, as in
// flash::HwyTarget::target); null if that target is not compiled in.
DecodeSpanFn HwyDecodeSpan(int64_t hwy_target);

// The best compiled target this CPU runs (EMU128 at worst).
DecodeSpanFn BestHwyDecodeSpan();

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_PAGED_DECODE_HWY_H_
