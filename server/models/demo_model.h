// The built-in "demo" model and the deterministic weight generator behind it.
//
// The demo model (d_model 256, 4 heads, biases, version 1) lets the server
// answer requests with no model repository. Its weights come from
// DeterministicRng, whose output is specified bit for bit (splitmix64), so
// they are identical on every machine and standard library. Tests and tools
// that need the same weights in PyTorch use WriteDemoRepository() and load
// the safetensors file it writes.
//
// Usage:
//   kernels::AttentionWeights w = DemoWeights();
//   absl::Status s = WriteDemoRepository("/tmp/repo");  // /tmp/repo/demo/...
#ifndef ATTNSERVE_SERVER_MODELS_DEMO_MODEL_H_
#define ATTNSERVE_SERVER_MODELS_DEMO_MODEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/attention.h"
#include "server/models/model_config.h"

namespace attn::server {

inline constexpr char kDemoModelName[] = "demo";
inline constexpr int64_t kDemoModelVersion = 1;
inline constexpr int64_t kDemoDModel = 256;
inline constexpr int64_t kDemoNumHeads = 4;
inline constexpr uint64_t kDemoSeed = 20240501;
inline constexpr char kDemoSource[] = "<builtin>";

// splitmix64 (Steele, Lea, Flood 2014): a fixed, portable sequence.
// Not thread-safe (a plain value).
class DeterministicRng {
 public:
  explicit DeterministicRng(uint64_t seed) : state_(seed) {}

  uint64_t Next();
  // Uniform in (-1, 1): the top 24 bits k of Next() give
  // (2k + 1 - 2^24) / 2^24, exactly representable as a float.
  float Uniform();

 private:
  uint64_t state_;
};

// Weights with every element U(-1, 1) / sqrt(d_model) drawn from
// DeterministicRng(seed) in the order wq, wk, wv, wo, bq, bk, bv, bo
// (biases only when `bias`). REQUIRES: all sizes > 0.
kernels::AttentionWeights DeterministicAttentionWeights(
    int64_t d_model, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
    bool bias, uint64_t seed);

// The demo model's config ({"num_heads": 4}, everything else default) and
// weights.
ModelConfig DemoModelConfig();
std::string DemoConfigJson();
kernels::AttentionWeights DemoWeights();

// Writes `dir`/demo/config.json and `dir`/demo/1/model.safetensors (F32,
// PyTorch nn.MultiheadAttention state_dict naming), creating directories as
// needed. Errors: INTERNAL on I/O failure, naming the path.
absl::Status WriteDemoRepository(const std::string& dir);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_DEMO_MODEL_H_
