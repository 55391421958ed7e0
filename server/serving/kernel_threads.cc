#include "server/serving/kernel_threads.h"

#include <algorithm>

namespace attn::server {

int64_t AttentionFlops(const kernels::AttentionConfig& config, int64_t batch,
                       int64_t q_len, int64_t kv_len, bool causal) {
  const int64_t d = config.d_model;
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  const int64_t queries = batch * q_len;
  const int64_t keys = batch * kv_len;
  // Q and output projections over the queries, K and V over the keys.
  const int64_t projections =
      2 * queries * d * q_width * 2 + 2 * keys * d * kv_width * 2;
  // Visible pairs per sequence: query i sees keys j <= i + (kv_len - q_len).
  int64_t pairs = q_len * kv_len;
  if (causal) {
    const int64_t offset = kv_len - q_len;
    pairs = 0;
    for (int64_t i = 0; i < q_len; ++i) {
      pairs += std::clamp<int64_t>(i + offset + 1, 0, kv_len);
    }
  }
  const int64_t core = 4 * batch * pairs * q_width;
  return projections + core;
}

int KernelThreadsFor(int64_t flops, int budget) {
  const int64_t threads = flops / kMinFlopsPerThread;
  return static_cast<int>(std::clamp<int64_t>(threads, 1, std::max(1, budget)));
}

}  // namespace attn::server
