// Finds the weights of one attention layer in a safetensors checkpoint and
// converts them to kernels::AttentionWeights.
//
// Recognised namings (DESIGN §3), each under any common prefix that ends in
// '.' (e.g. "encoder.layer.0.attention."):
//   torch-packed:   in_proj_weight [Hq+2Hkv, E], in_proj_bias,
//                   out_proj.weight [E, Hq], out_proj.bias
//   torch-separate: q_proj_weight, k_proj_weight, v_proj_weight,
//                   in_proj_bias, out_proj.weight, out_proj.bias
//   llama:          q_proj.weight, k_proj.weight, v_proj.weight,
//                   o_proj.weight (+ optional .bias each)
//   bert:           self.query.weight, self.key.weight, self.value.weight,
//                   output.dense.weight (+ optional .bias each)
// where Hq = num_heads * head_dim and Hkv = num_kv_heads * head_dim.
// d_model (E) is the in_features of the query weight; every other shape is
// checked against it and the config. Tensors outside the layer are ignored,
// but exactly one (naming, prefix) must match: a file with two attention
// layers or two namings is ambiguous and rejected.
//
// Usage:
//   absl::StatusOr<AttentionCheckpoint> ckpt =
//       LoadAttentionCheckpoint("/models/m/1/model.safetensors", config);
#ifndef ATTNSERVE_SERVER_MODELS_CHECKPOINT_LOADER_H_
#define ATTNSERVE_SERVER_MODELS_CHECKPOINT_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "kernels/attention.h"
#include "server/models/model_config.h"
#include "server/models/safetensors.h"

namespace attn::server {

enum class CheckpointNaming { kTorchPacked, kTorchSeparate, kLlama, kBert };

// "torch-packed", "torch-separate", "llama", "bert".
const char* CheckpointNamingName(CheckpointNaming naming);

// The attention layer found in a checkpoint. A plain value.
struct AttentionCheckpoint {
  CheckpointNaming naming = CheckpointNaming::kTorchPacked;
  std::string prefix;                 // e.g. "encoder.layer.0.attention."
  kernels::AttentionConfig config;    // resolved: no zero defaults left
  kernels::AttentionWeights weights;  // fp32, PyTorch layout
};

// Extracts the layer from a parsed file. Errors: INVALID_ARGUMENT naming the
// file, the tensor and expected vs actual shape (or the ambiguity, or the
// missing tensor); also when a weight is not finite.
absl::StatusOr<AttentionCheckpoint> ExtractAttentionCheckpoint(
    const SafetensorsFile& file, const ModelConfig& config);

// Reads and parses `path`, then ExtractAttentionCheckpoint(). Errors as
// SafetensorsFile::ReadFile() and ExtractAttentionCheckpoint().
absl::StatusOr<AttentionCheckpoint> LoadAttentionCheckpoint(
    const std::string& path, const ModelConfig& config);

// The inverse of ExtractAttentionCheckpoint(): `weights` written in `naming`
// under `prefix`, as `dtype` (kF32, kBF16 or kF16). Empty biases are left
// out. Used by tests, the demo repository and tools.
// REQUIRES: d_model > 0; weight sizes consistent (wq: [Hq, d_model], wk and
// wv: [Hkv, d_model], wo: [d_model, Hq]); for kTorchPacked and
// kTorchSeparate either all of bq, bk, bv or none.
std::string SerializeAttentionCheckpoint(
    const kernels::AttentionWeights& weights, int64_t d_model,
    CheckpointNaming naming, const std::string& prefix, SafetensorsDType dtype);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_CHECKPOINT_LOADER_H_
