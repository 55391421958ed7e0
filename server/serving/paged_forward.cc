#include "server/serving/paged_forward.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/paged_attention.h"

namespace attn::server {

absl::Status RunPagedForward(const Model& model, const float* x,
                             absl::Span<const PagedChunk> chunks,
                             const KvPoolView& pool, float* out) {
  if (model.kernel == nullptr) {
    return absl::InternalError(absl::StrCat("model '", model.name, "' version ",
                                            model.version,
                                            " has no loaded kernel"));
  }
  kernels::KvPool kv;
  kv.layout.block_tokens = static_cast<int>(pool.block_tokens);
  kv.layout.num_kv_heads = static_cast<int>(pool.num_kv_heads);
  kv.layout.head_dim = static_cast<int>(pool.head_dim);
  kv.layout.dtype = pool.bf16 ? kernels::KvPoolLayout::Dtype::kBf16
                              : kernels::KvPoolLayout::Dtype::kF32;
  kv.k_base = pool.k_base;
  kv.v_base = pool.v_base;
  kv.num_blocks = pool.num_blocks;
  std::vector<kernels::PagedSequence> seqs(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    seqs[i].start_position = chunks[i].start_position;
    seqs[i].new_tokens = chunks[i].new_tokens;
    seqs[i].block_table = chunks[i].block_table;
    seqs[i].num_blocks = chunks[i].num_blocks;
  }
  return model.kernel->ForwardPaged(x, seqs, kv, out);
}

}  // namespace attn::server
