// Loaded models and the repository that owns them.
//
// Layout (as Triton, TF Serving and OVMS):
//   <repository>/<model_name>/config.json
//   <repository>/<model_name>/<version>/model.safetensors   (version >= 1)
//
// Every version directory found at start-up is loaded; a request for version
// 0 gets the newest. A malformed config or checkpoint fails the load with a
// message naming the file, the tensor and the problem.
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/attention.h"
#include "server/models/model_config.h"

namespace attn::server {

// One servable model version. Immutable after load; shared by every request
// that uses it (shared_ptr<const Model>), so it is safe to read from any
// thread.
struct Model {
  std::string name;
  int64_t version = 0;
  std::string source;  // checkpoint path, or "<builtin>"
  ModelConfig config;
  kernels::AttentionConfig attention;  // resolved (no zero defaults left)
  std::unique_ptr<const kernels::MultiHeadAttention> kernel;
};

// Name → versions of loaded models. Immutable after construction; safe for
// concurrent readers.
class ModelRepository {
 public:
  // Scans `root` and loads every model and version. Errors: NOT_FOUND if root
  // does not exist; INVALID_ARGUMENT for a malformed config/checkpoint or an
  // empty repository (message names the file).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> LoadFromDirectory(
      const std::string& root);

  // The built-in "demo" model: d_model 256, 4 heads, version 1,
  // deterministic weights (same on every machine).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> CreateDemo();

  // Builds a repository from already loaded models (tests, demo).
  explicit ModelRepository(std::vector<std::shared_ptr<const Model>> models);

  // `version` 0 means newest. Errors: NOT_FOUND naming the model (and the
  // versions that exist, when only the version is wrong).
  absl::StatusOr<std::shared_ptr<const Model>> Get(const std::string& name,
                                                   int64_t version) const;

  // All versions of all models, by name then version.
  std::vector<std::shared_ptr<const Model>> List() const;

 private:
  std::map<std::string, std::map<int64_t, std::shared_ptr<const Model>>>
      models_;
};

// Loads one model version from a directory holding config.json's parsed
// content and a checkpoint file. Exposed for tests and the fuzz target.
absl::StatusOr<std::shared_ptr<const Model>> LoadModel(
    const std::string& name, int64_t version, const ModelConfig& config,
    const std::string& checkpoint_path);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_
