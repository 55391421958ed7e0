// libFuzzer target: config.json parsing (ParseModelConfig) and its resolution
// against a checkpoint's d_model (ResolveAttentionConfig). Any input must
// yield a status, never a crash or a sanitizer report; a config that parses
// must resolve to a self-consistent attention config or a status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/models/model_config.h"

namespace {

// Aborts (a finding for libFuzzer) when an accepted config breaks an
// invariant the rest of the server relies on.
void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<attn::server::ModelConfig> config =
      attn::server::ParseModelConfig(
          std::string(reinterpret_cast<const char*>(data), size),
          "fuzz/config.json");
  if (!config.ok()) {
    Check(absl::IsInvalidArgument(config.status()));
    return 0;
  }
  Check(config->num_heads >= 1);
  Check(config->max_sequence_length >= 1);
  Check(config->batching.max_batch_tokens >= 1);
  Check(config->batching.max_batch_requests >= 1);
  Check(config->batching.max_queue_size >= 1);
  for (const attn::server::WarmupShape& w : config->warmup) {
    Check(w.batch >= 1 && w.seq >= 1 && w.seq <= config->max_sequence_length);
  }
  // d_model values a checkpoint may have: tiny, typical, odd and huge.
  for (int64_t d_model : {int64_t{1}, int64_t{8}, int64_t{96}, int64_t{1024},
                          int64_t{4099}, int64_t{1} << 40}) {
    absl::StatusOr<attn::kernels::AttentionConfig> resolved =
        attn::server::ResolveAttentionConfig(*config, d_model);
    if (!resolved.ok()) {
      Check(absl::IsInvalidArgument(resolved.status()));
      continue;
    }
    Check(resolved->d_model == d_model);
    Check(resolved->num_heads >= 1 && resolved->num_kv_heads >= 1);
    Check(resolved->head_dim >= 1);
    Check(resolved->num_heads % resolved->num_kv_heads == 0);
  }
  return 0;
}
