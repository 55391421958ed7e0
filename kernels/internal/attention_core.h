// The attention core: for every batch item and head,
//   P = softmax(Q_h·K_gᵀ + mask),  O_h = P·V_g   (g = h / (H / KVH)),
// on token-major projected buffers. Q·Kᵀ and P·V are oneDNN matmuls over
// strided views (no transposes or copies); masking is a C++ pass and the
// softmax a oneDNN primitive. Work is split into tiles of batch items and
// query rows so that the score tile stays bounded (kMaxScoreTileFloats).
// The attention scale is expected to be folded into Q already.
// Internal: not part of the public API.
//
// Thread-safety: Forward() is const and may be called concurrently; the
// primitive cache and scratch pool are internally synchronized.
#ifndef ATTNSERVE_KERNELS_INTERNAL_ATTENTION_CORE_H_
#define ATTNSERVE_KERNELS_INTERNAL_ATTENTION_CORE_H_

#include <cstdint>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/internal/masking.h"
#include "kernels/internal/primitive_cache.h"
#include "kernels/internal/scratch_arena.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace attn::kernels::internal {

class AttentionCore {
 public:
  // Upper bound on the floats of one score tile [batch items, H, rows, Sk].
  static constexpr int64_t kMaxScoreTileFloats = int64_t{1} << 21;  // 8 MiB

  // REQUIRES: all > 0, num_heads % num_kv_heads == 0.
  AttentionCore(const dnnl::engine& engine, int64_t num_heads,
                int64_t num_kv_heads, int64_t head_dim);

  // q: [batch * q_len, H * head_dim] (already scaled), k and v:
  // [batch * kv_len, KVH * head_dim], all token-major with rows `q_stride`
  // (q) and `kv_stride` (k and v) floats apart (views into a fused QKV
  // projection buffer are fine). Context rows are dense (H * head_dim).
  // Writes context [batch * q_len, H * head_dim]; if `weights` is not null,
  // the softmax weights [batch, H, q_len, kv_len]; and row_masked[b * q_len
  // + i] = 1 for query rows whose keys are all masked (their context and
  // weights are zero), 0 otherwise.
  // REQUIRES: shapes and mask validated by the caller.
  absl::Status Forward(int64_t batch, int64_t q_len, int64_t kv_len,
                       const float* q, int64_t q_stride, const float* k,
                       const float* v, int64_t kv_stride, const MaskSpec& mask,
                       float* context, float* weights,
                       uint8_t* row_masked) const;

 private:
  // (batch items per tile, query rows per tile, q_len, kv_len, q_stride,
  // kv_stride, CallerThreads()).
  using TileKey =
      std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int>;
  struct TilePrims {
    dnnl::matmul qk;
    dnnl::memory::desc q_md, k_md, scores_md, qk_scratch_md;
    dnnl::softmax_forward softmax;
    dnnl::memory::desc softmax_md, softmax_scratch_md;
    dnnl::matmul pv;
    dnnl::memory::desc v_md, ctx_md, pv_scratch_md;
  };

  absl::StatusOr<TilePrims> CreateTilePrims(const TileKey& key) const;

  dnnl::engine engine_;
  const int64_t num_heads_;
  const int64_t num_kv_heads_;
  const int64_t head_dim_;
  mutable PrimitiveCache<TileKey, TilePrims> cache_;
  mutable ScratchPool pool_;  // score tiles and oneDNN scratchpads
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_ATTENTION_CORE_H_
