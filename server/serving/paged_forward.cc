#include "server/serving/paged_forward.h"

namespace attn::server {

absl::Status RunPagedForward(const Model& model, const float* x,
                             absl::Span<const PagedChunk> chunks,
                             const KvPoolView& pool, float* out) {
  (void)model;
  (void)x;
  (void)chunks;
  (void)pool;
  (void)out;
  return absl::UnimplementedError(
      "session steps need the paged attention kernel, which this build does "
      "not have yet");
}

}  // namespace attn::server
