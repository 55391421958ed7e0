// Paged key/value cache types for incremental (decode) attention:
// MultiHeadAttention::ForwardPaged (kernels/attention.h) projects the new
// tokens of several sequences, appends their K and V to each sequence's
// blocks in a caller-owned pool, and attends every new query causally over
// the sequence's cached and new keys (within the layer's sliding window).
//
//   KvPoolLayout layout = KvPoolLayoutFor(mha->config(),
//                                         KvPoolLayout::Dtype::kBf16);
//   std::vector<uint16_t> k(blocks * layout.block_elements()), v(...);
//   KvPool pool{layout, k.data(), v.data(), blocks};
//   int32_t table[] = {7, 3};            // this sequence's blocks, in order
//   PagedSequence seq{/*start_position=*/20, /*new_tokens=*/1, table, 2};
//   absl::Status s = mha->ForwardPaged(x, absl::MakeConstSpan(&seq, 1),
//                                      pool, out);
//   // on OK the sequence's cache holds 21 tokens (positions 0..20)
//
// Pool layout: for block b, K is at k_base + b * block_elements() elements,
// laid out [num_kv_heads][head_dim][block_tokens] (transposed within the
// block: the decode kernel's score loop then loads consecutive keys into
// vector lanes, with no horizontal sums); V at v_base + b *
// block_elements(), laid out [num_kv_heads][block_tokens][head_dim].
// Token position p of a sequence lives in block block_table[p /
// block_tokens], slot p % block_tokens. Elements are fp32 or bf16 (stored
// as uint16_t, round-to-nearest-even from fp32; bf16 halves the cache).
// K is stored AFTER the rotary embedding (at its absolute position), V as
// projected (with bias).
//
// Ownership: the pool memory, block tables, inputs and outputs are owned by
// the caller and borrowed for the duration of one ForwardPaged call. The
// kernel never allocates, frees or copies a sequence's cache: it reads the
// blocks in place and writes only the slots of the new tokens (positions
// start_position .. start_position + new_tokens - 1).
//
// Thread-safety: these are plain structs. ForwardPaged is const; calls may
// run concurrently on the same layer and the same pool as long as no two
// calls touch the same block (the caller guarantees that no two concurrent
// calls, and no two sequences of one call, share a block). Each call runs
// an OpenMP team of omp_get_max_threads() of the calling thread.
#ifndef ATTNSERVE_KERNELS_PAGED_ATTENTION_H_
#define ATTNSERVE_KERNELS_PAGED_ATTENTION_H_

#include <cstdint>

namespace attn::kernels {

// Shape and element type of the K (and, identically, the V) blocks of a
// pool. num_kv_heads and head_dim must equal the layer's.
struct KvPoolLayout {
  enum class Dtype { kF32, kBf16 };

  int block_tokens = 16;  // tokens per block. REQUIRES: > 0.
  int num_kv_heads = 0;
  int head_dim = 0;
  Dtype dtype = Dtype::kF32;

  // Elements of one K block (equal to one V block):
  // num_kv_heads * block_tokens * head_dim.
  int64_t block_elements() const {
    return int64_t{num_kv_heads} * block_tokens * head_dim;
  }
  // 4 (kF32) or 2 (kBf16).
  int64_t element_bytes() const { return dtype == Dtype::kF32 ? 4 : 2; }
  // Bytes of one block of K plus one block of V: the cache cost of
  // block_tokens tokens of one layer.
  int64_t block_bytes() const { return 2 * block_elements() * element_bytes(); }
};

// Caller-owned pool memory: num_blocks blocks of K at k_base and of V at
// v_base (float* for kF32, uint16_t* for kBf16). The pointers are not const
// because ForwardPaged writes the new tokens' K and V into them.
struct KvPool {
  KvPoolLayout layout;
  void* k_base = nullptr;
  void* v_base = nullptr;
  int64_t num_blocks = 0;
};

// One sequence of a ForwardPaged call. Its cache already holds positions
// 0 .. start_position - 1; the call appends new_tokens tokens. block_table
// lists the sequence's blocks in position order; the caller has allocated
// enough of them for start_position + new_tokens tokens (num_blocks >=
// ceil((start_position + new_tokens) / block_tokens)), each in
// [0, pool.num_blocks).
struct PagedSequence {
  int64_t start_position = 0;  // REQUIRES: >= 0
  int64_t new_tokens = 0;      // REQUIRES: >= 1
  const int32_t* block_table = nullptr;
  int64_t num_blocks = 0;
};

}  // namespace attn::kernels

#endif  // ATTNSERVE_KERNELS_PAGED_ATTENTION_H_
