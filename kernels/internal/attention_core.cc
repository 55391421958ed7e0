#include "kernels/internal/attention_core.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/internal/dnnl_util.h"

namespace attn::kernels::internal {
namespace {

using dnnl::memory;
using DT = memory::data_type;
using Dims = memory::dims;

}  // namespace

AttentionCore::AttentionCore(const dnnl::engine& engine, int64_t num_heads,
                             int64_t num_kv_heads, int64_t head_dim)
    : engine_(engine),
      num_heads_(num_heads),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim) {}

absl::StatusOr<AttentionCore::TilePrims> AttentionCore::CreateTilePrims(
    const TileKey& key) const {
  // Named copies, not a structured binding: C++17 lambdas (below) cannot
  // capture those (clang rejects it; GCC accepts it as an extension).
  const int64_t nb = std::get<0>(key);
  const int64_t qb = std::get<1>(key);
  const int64_t q_len = std::get<2>(key);
  const int64_t kv_len = std::get<3>(key);
  const int64_t q_stride = std::get<4>(key);
  const int64_t kv_stride = std::get<5>(key);
  // std::get<6>(key), the caller's OpenMP thread count, only keys the cache:
  // oneDNN reads it from the calling thread when the primitive is created.
  const int64_t kvh = num_kv_heads_;
  const int64_t group = num_heads_ / num_kv_heads_;
  const int64_t dh = head_dim_;
  const int64_t q_row = num_heads_ * dh;  // floats per token in context
  TilePrims p;
  ATTN_RETURN_IF_ERROR(CallDnnl(
      absl::StrCat("creating attention primitives for q_len ", q_len,
                   ", kv_len ", kv_len),
      [&]() -> absl::Status {
        const dnnl::primitive_attr attr = UserScratchpadAttr();
        // 5-D views [tile batch, kv head, head in group, row, col]. Heads of
        // one group share K and V through a broadcast dimension of size 1.
        p.q_md =
            memory::desc({nb, kvh, group, qb, dh}, DT::f32,
                         Dims{q_len * q_stride, group * dh, dh, q_stride, 1});
        p.k_md = memory::desc({nb, kvh, 1, dh, kv_len}, DT::f32,
                              Dims{kv_len * kv_stride, dh, dh, 1, kv_stride});
        p.scores_md = memory::desc({nb, kvh, group, qb, kv_len}, DT::f32,
                                   memory::format_tag::abcde);
        dnnl::matmul::primitive_desc qk_pd(
            dnnl::matmul::desc(p.q_md, p.k_md, p.scores_md), attr, engine_);
        p.qk = dnnl::matmul(qk_pd);
        p.qk_scratch_md = qk_pd.scratchpad_desc();

        p.softmax_md = memory::desc({nb * num_heads_ * qb, kv_len}, DT::f32,
                                    memory::format_tag::ab);
        dnnl::softmax_forward::primitive_desc sm_pd(
            dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference,
                                        p.softmax_md, 1),
            attr, engine_);
        p.softmax = dnnl::softmax_forward(sm_pd);
        p.softmax_scratch_md = sm_pd.scratchpad_desc();

        p.v_md = memory::desc({nb, kvh, 1, kv_len, dh}, DT::f32,
                              Dims{kv_len * kv_stride, dh, dh, kv_stride, 1});
        p.ctx_md = memory::desc({nb, kvh, group, qb, dh}, DT::f32,
                                Dims{q_len * q_row, group * dh, dh, q_row, 1});
        dnnl::matmul::primitive_desc pv_pd(
            dnnl::matmul::desc(p.scores_md, p.v_md, p.ctx_md), attr, engine_);
        p.pv = dnnl::matmul(pv_pd);
        p.pv_scratch_md = pv_pd.scratchpad_desc();
        return absl::OkStatus();
      }));
  return p;
}

absl::Status AttentionCore::Forward(int64_t batch, int64_t q_len,
                                    int64_t kv_len, const float* q,
                                    int64_t q_stride, const float* k,
                                    const float* v, int64_t kv_stride,
                                    const MaskSpec& mask, float* context,
                                    float* weights, uint8_t* row_masked) const {
  const int64_t heads = num_heads_;
  const int64_t q_row = heads * head_dim_;
  // Tile: all query rows of as many batch items as fit, else a block of
  // query rows of one batch item.
  const int64_t per_row = heads * kv_len;
  const int64_t rows_fit = std::max<int64_t>(1, kMaxScoreTileFloats / per_row);
  const int64_t q_block = std::min(q_len, rows_fit);
  const int64_t b_block =
      q_block == q_len ? std::clamp<int64_t>(rows_fit / q_len, 1, batch) : 1;

  ScratchLayout layout;
  const size_t scores_at =
      layout.Add<float>(b_block * heads * q_block * kv_len);
  const size_t masked_at = layout.Add<uint8_t>(b_block * q_block);
  // oneDNN scratchpads (one at a time), sized for the largest tile shape.
  const size_t dnnl_at = layout.bytes();
  ScratchPool::Lease arena = pool_.Acquire();
  void* base = nullptr;
  size_t dnnl_bytes = 0;
  float* scores_data = nullptr;
  uint8_t* tile_masked = nullptr;

  for (int64_t b0 = 0; b0 < batch; b0 += b_block) {
    const int64_t nb = std::min(b_block, batch - b0);
    for (int64_t i0 = 0; i0 < q_len; i0 += q_block) {
      const int64_t qb = std::min(q_block, q_len - i0);
      const TileKey key{nb,       qb,        q_len,          kv_len,
                        q_stride, kv_stride, CallerThreads()};
      absl::StatusOr<std::shared_ptr<const TilePrims>> prims_or =
          cache_.GetOrCreate(key, [&] { return CreateTilePrims(key); });
      if (!prims_or.ok()) return prims_or.status();
      const TilePrims& p = **prims_or;
      const size_t need =
          std::max({p.qk_scratch_md.get_size(), p.softmax_scratch_md.get_size(),
                    p.pv_scratch_md.get_size()});
      if (base == nullptr || need > dnnl_bytes) {
        dnnl_bytes = std::max(need, dnnl_bytes);
        ATTN_RETURN_IF_ERROR(CallDnnl("allocating attention scratch", [&] {
          base = arena->Reserve(dnnl_at + dnnl_bytes);
          return absl::OkStatus();
        }));
        scores_data = ScratchLayout::At<float>(base, scores_at);
        tile_masked = ScratchLayout::At<uint8_t>(base, masked_at);
      }
      float* const scores = scores_data;
      uint8_t* const dnnl_scratch = ScratchLayout::At<uint8_t>(base, dnnl_at);

      const float* q_tile = q + (b0 * q_len + i0) * q_stride;
      const float* k_tile = k + b0 * kv_len * kv_stride;
      const float* v_tile = v + b0 * kv_len * kv_stride;
      float* ctx_tile = context + (b0 * q_len + i0) * q_row;

      ATTN_RETURN_IF_ERROR(
          CallDnnl("running the attention core", [&]() -> absl::Status {
            dnnl::stream stream(engine_);
            memory scores_mem(p.scores_md, engine_, scores);
            {
              memory scratch(p.qk_scratch_md, engine_, dnnl_scratch);
              p.qk.execute(stream,
                           {{DNNL_ARG_SRC, Borrow(p.q_md, engine_, q_tile)},
                            {DNNL_ARG_WEIGHTS, Borrow(p.k_md, engine_, k_tile)},
                            {DNNL_ARG_DST, scores_mem},
                            {DNNL_ARG_SCRATCHPAD, scratch}});
              stream.wait();
            }
            // Mask; remember fully masked rows.
            bool any_masked = false;
            for (int64_t bb = 0; bb < nb; ++bb) {
              for (int64_t ii = 0; ii < qb; ++ii) {
                float* row0 = scores + (bb * heads * qb + ii) * kv_len;
                const bool masked =
                    ApplyRowMask(mask, b0 + bb, i0 + ii, q_len, kv_len, row0,
                                 heads, qb * kv_len);
                tile_masked[bb * qb + ii] = masked ? 1 : 0;
                row_masked[(b0 + bb) * q_len + i0 + ii] = masked ? 1 : 0;
                any_masked |= masked;
              }
            }
            {
              memory scratch(p.softmax_scratch_md, engine_, dnnl_scratch);
              memory sm_mem(p.softmax_md, engine_, scores);
              p.softmax.execute(stream, {{DNNL_ARG_SRC, sm_mem},
                                         {DNNL_ARG_DST, sm_mem},
                                         {DNNL_ARG_SCRATCHPAD, scratch}});
              stream.wait();
            }
            // Fully masked rows: zero weights (the softmax made them NaN).
            if (any_masked) {
              for (int64_t bb = 0; bb < nb; ++bb) {
                for (int64_t ii = 0; ii < qb; ++ii) {
                  if (!tile_masked[bb * qb + ii]) continue;
                  for (int64_t h = 0; h < heads; ++h) {
                    float* row = scores + ((bb * heads + h) * qb + ii) * kv_len;
                    std::fill(row, row + kv_len, 0.0f);
                  }
                }
              }
            }
            if (weights != nullptr) {
              for (int64_t bb = 0; bb < nb; ++bb) {
                for (int64_t h = 0; h < heads; ++h) {
                  std::memcpy(
                      weights + (((b0 + bb) * heads + h) * q_len + i0) * kv_len,
                      scores + (bb * heads + h) * qb * kv_len,
                      sizeof(float) * qb * kv_len);
                }
              }
            }
            {
              memory scratch(p.pv_scratch_md, engine_, dnnl_scratch);
              p.pv.execute(stream,
                           {{DNNL_ARG_SRC, scores_mem},
                            {DNNL_ARG_WEIGHTS, Borrow(p.v_md, engine_, v_tile)},
                            {DNNL_ARG_DST, memory(p.ctx_md, engine_, ctx_tile)},
                            {DNNL_ARG_SCRATCHPAD, scratch}});
              stream.wait();
            }
            return absl::OkStatus();
          }));
    }
  }
  return absl::OkStatus();
}

}  // namespace attn::kernels::internal
