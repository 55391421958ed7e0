#include "server/models/demo_model.h"

#include <cmath>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/safetensors.h"

namespace attn::server {

uint64_t DeterministicRng::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

float DeterministicRng::Uniform() {
  // k has 24 bits, so 2k + 1 - 2^24 is an odd integer below 2^24 in
  // magnitude: exact as a float, as is the division by 2^24.
  const auto k = static_cast<int32_t>(Next() >> 40);
  return static_cast<float>(2 * k + 1 - (1 << 24)) * (1.0f / 16777216.0f);
}

kernels::AttentionWeights DeterministicAttentionWeights(
    int64_t d_model, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
    bool bias, uint64_t seed) {
  DeterministicRng rng(seed);
  // Computed in double and rounded once, so the factor is the same
  // everywhere.
  const auto scale =
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_model)));
  auto fill = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = rng.Uniform() * scale;
    return v;
  };
  const int64_t hq = num_heads * head_dim;
  const int64_t hkv = num_kv_heads * head_dim;
  kernels::AttentionWeights w;
  w.wq = fill(hq * d_model);
  w.wk = fill(hkv * d_model);
  w.wv = fill(hkv * d_model);
  w.wo = fill(d_model * hq);
  if (bias) {
    w.bq = fill(hq);
    w.bk = fill(hkv);
    w.bv = fill(hkv);
    w.bo = fill(d_model);
  }
  return w;
}

ModelConfig DemoModelConfig() {
  ModelConfig config;
  config.num_heads = kDemoNumHeads;
  return config;
}

std::string DemoConfigJson() {
  return absl::StrCat("{\"num_heads\": ", kDemoNumHeads, "}\n");
}

kernels::AttentionWeights DemoWeights() {
  return DeterministicAttentionWeights(
      kDemoDModel, kDemoNumHeads, kDemoNumHeads, kDemoDModel / kDemoNumHeads,
      /*bias=*/true, kDemoSeed);
}

absl::Status WriteDemoRepository(const std::string& dir) {
  const std::filesystem::path model_dir =
      std::filesystem::path(dir) / kDemoModelName;
  const std::filesystem::path version_dir =
      model_dir / std::to_string(kDemoModelVersion);
  std::error_code ec;
  std::filesystem::create_directories(version_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(
        version_dir.string(), ": cannot create directory: ", ec.message()));
  }
  absl::Status s =
      WriteFileBytes((model_dir / "config.json").string(), DemoConfigJson());
  if (!s.ok()) return s;
  return WriteFileBytes(
      (version_dir / "model.safetensors").string(),
      SerializeAttentionCheckpoint(DemoWeights(), kDemoDModel,
                                   CheckpointNaming::kTorchPacked, "",
                                   SafetensorsDType::kF32));
}

}  // namespace attn::server
