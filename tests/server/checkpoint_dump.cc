// Test helper for tests/server/test_export_checkpoint.py.
//
//   checkpoint_dump read <model.safetensors> <config.json>
//       Loads the checkpoint with the C++ loader and prints the naming, the
//       resolved config and every weight (fp32) as JSON on stdout.
//   checkpoint_dump write-demo <dir>
//       Writes the demo repository (<dir>/demo/...).
// Errors go to stderr with exit status 1.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "server/models/checkpoint_loader.h"
#include "server/models/demo_model.h"
#include "server/models/model_config.h"

namespace {

int Fail(const std::string& message) {
  std::cerr << message << "\n";
  return 1;
}

int Read(const std::string& checkpoint, const std::string& config_path) {
  std::ifstream in(config_path);
  if (!in) return Fail(config_path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<attn::server::ModelConfig> config =
      attn::server::ParseModelConfig(text.str(), config_path);
  if (!config.ok()) return Fail(config.status().ToString());
  absl::StatusOr<attn::server::AttentionCheckpoint> ckpt =
      attn::server::LoadAttentionCheckpoint(checkpoint, *config);
  if (!ckpt.ok()) return Fail(ckpt.status().ToString());
  const attn::kernels::AttentionWeights& w = ckpt->weights;
  nlohmann::json out = {
      {"naming", attn::server::CheckpointNamingName(ckpt->naming)},
      {"prefix", ckpt->prefix},
      {"config",
       {{"d_model", ckpt->config.d_model},
        {"num_heads", ckpt->config.num_heads},
        {"num_kv_heads", ckpt->config.num_kv_heads},
        {"head_dim", ckpt->config.head_dim},
        {"scale", ckpt->config.scale},
        {"rope_theta", ckpt->config.rope_theta},
        {"rope_style",
         ckpt->config.rope_style ==
                 attn::kernels::AttentionConfig::RopeStyle::kInterleaved
             ? "interleaved"
             : "half"},
        {"rope_dims", ckpt->config.rope_dims},
        {"sliding_window", ckpt->config.sliding_window}}},
      {"weights",
       {{"wq", w.wq},
        {"wk", w.wk},
        {"wv", w.wv},
        {"wo", w.wo},
        {"bq", w.bq},
        {"bk", w.bk},
        {"bv", w.bv},
        {"bo", w.bo}}}};
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: checkpoint_dump read <model.safetensors> <config.json> | "
      "write-demo <dir>";
  if (argc < 2) return Fail(usage);
  const std::string command = argv[1];
  if (command == "read" && argc == 4) return Read(argv[2], argv[3]);
  if (command == "write-demo" && argc == 3) {
    absl::Status s = attn::server::WriteDemoRepository(argv[2]);
    return s.ok() ? 0 : Fail(s.ToString());
  }
  return Fail(usage);
}
