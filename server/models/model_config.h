// config.json of one model in the repository: parsing and validation.
//
// Example:
//   {"num_heads": 8, "num_kv_heads": 2, "causal": false,
//    "compute_dtype": "float32", "max_sequence_length": 4096,
//    "rope_theta": 10000, "rope_style": "half", "sliding_window": 4096,
//    "batching": {"max_batch_tokens": 4096, "max_queue_delay_us": 500},
//    "warmup": [{"batch": 1, "seq": 16}, {"batch": 8, "seq": 128}],
//    "version_policy": {"latest": 2}}
//
// Unknown keys (at any level) are an error, so that a typo never silently
// falls back to a default.
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_CONFIG_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/attention.h"

namespace attn::server {

// Dynamic batching options of one model (config.json → "batching").
struct BatchingOptions {
  // Most tokens (sum of B·Sq over the requests) in one kernel call. Default:
  // 4096, enough to amortise the weights of a d_model 1024 layer while a
  // batch still fits in L3.
  int64_t max_batch_tokens = 4096;
  // Most requests merged into one kernel call. Default: 64. 1 turns merging
  // off.
  int64_t max_batch_requests = 64;
  // How long a batch formed while the executor was busy may wait to fill,
  // measured from its oldest request's arrival; an idle executor never
  // waits. Default: 500 µs, small against a gRPC round trip. 0 never waits.
  int64_t max_queue_delay_us = 500;
  // Requests waiting per model; past it Attend answers UNAVAILABLE
  // (retryable). Default: 1024.
  int64_t max_queue_size = 1024;
  // A request still queued after this long answers DEADLINE_EXCEEDED and is
  // never computed. 0: only the client's deadline applies. Default: 0.
  int64_t default_timeout_us = 0;
};

// Session limits of one model (config.json → "sessions"; see
// server/serving/session_table.h).
struct SessionOptions {
  // Live sessions of one model version; a start past it evicts that
  // version's least recently used idle session (reason "max_sessions"), or
  // answers RESOURCE_EXHAUSTED when all are busy. Default: 1024.
  int64_t max_sessions = 1024;
  // A session without a step for this long is freed (its next step gets
  // NOT_FOUND). Default: 300 s, longer than any pause between two decode
  // steps of a live generation.
  double idle_timeout_s = 300;
};

// One warm-up forward pass (config.json → "warmup": [{"batch": 1, "seq": 16,
// "return_attention_weights": false}, ...]): run before the model serves so
// that its oneDNN primitives exist and its weights are touched.
struct WarmupShape {
  int64_t batch = 1;
  int64_t seq = 16;  // self-attention, Sq = Sk; <= max_sequence_length
  bool return_attention_weights = false;
};

// Which of the version directories found on disk are served
// (config.json → "version_policy"; the convention of Triton, TF Serving and
// OVMS): {"latest": N} (default {"latest": 1}), {"all": true} or
// {"specific": [1, 3]}.
struct VersionPolicy {
  enum class Kind { kLatest, kAll, kSpecific };
  Kind kind = Kind::kLatest;
  int64_t latest = 1;             // kLatest: how many of the newest
  std::vector<int64_t> specific;  // kSpecific: sorted, unique, >= 1

  // The versions of `available` (sorted ascending) the policy serves,
  // ascending.
  std::vector<int64_t> Select(const std::vector<int64_t>& available) const;
  // "latest 1", "all", "specific [1, 3]".
  std::string ToString() const;
  bool operator==(const VersionPolicy& other) const {
    return kind == other.kind && latest == other.latest &&
           specific == other.specific;
  }
};

// Parsed config.json. Fields the file leaves out keep the defaults below;
// fields that depend on d_model (known only from the checkpoint) stay 0 here
// and are resolved by ResolveAttentionConfig().
struct ModelConfig {
  int64_t num_heads = 0;     // required
  int64_t num_kv_heads = 0;  // 0: num_heads
  int64_t head_dim = 0;      // 0: d_model / num_heads
  bool causal = false;       // default for requests that do not say
  std::string compute_dtype = "float32";  // "float32" | "bfloat16"
  float scale = 0.0f;                     // 0: 1/sqrt(head_dim)
  int64_t max_sequence_length = 8192;     // longest Sq or Sk accepted
  // Rotary position embedding (kernels/attention.h): base theta, 0 = none.
  double rope_theta = 0.0;
  std::string rope_style = "half";  // "half" (rotate_half) | "interleaved"
  int64_t rope_dims = 0;            // 0: head_dim; even, <= head_dim
  // 0: none; else query i sees keys i - sliding_window < j <= i. Needs
  // "causal": true.
  int64_t sliding_window = 0;
  BatchingOptions batching;
  // Element type of the session KV cache: "float32" | "bfloat16" (halves
  // the cache's memory; K/V are rounded to bf16 when written).
  std::string kv_cache_dtype = "float32";
  SessionOptions sessions;
  // Default (key absent): [{1, 16}, {1, 16, weights}], the shape of a small
  // request on both the flash and the materialising core, with seq clamped to
  // max_sequence_length; [] turns it off.
  std::vector<WarmupShape> warmup = {{1, 16, false}, {1, 16, true}};
  VersionPolicy version_policy;
};

// Parses and validates config.json text. `path` is only used in messages.
// Errors: INVALID_ARGUMENT naming the file and the key.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text,
                                             const std::string& path);

// Combines the config with the d_model found in the checkpoint.
// Errors: INVALID_ARGUMENT (e.g. num_heads does not divide d_model).
absl::StatusOr<kernels::AttentionConfig> ResolveAttentionConfig(
    const ModelConfig& config, int64_t d_model);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_CONFIG_H_
