// Loaded models and the routing table that serves them.
//
// Layout (as Triton, TF Serving and OVMS):
//   <repository>/<model_name>/config.json
//   <repository>/<model_name>/<version>/model.safetensors   (version >= 1)
//
// ModelRepository is the routing table: name -> ready versions. Versions are
// added and removed at run time (by ModelLifecycle, see model_lifecycle.h);
// a request for version 0 gets the newest ready version.
//
// Reference counting: a version is a ModelHandle (shared_ptr<const Model>).
// The table holds one reference; every request (and, e.g., a session) that
// resolved the version holds another for as long as it uses it. Remove()
// takes the version out of routing at once; its memory is freed when the
// last handle is dropped, on whichever thread drops it. No lock is held
// while a handle is used (compute never runs under the table's lock).
#ifndef ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_
#define ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  // Bytes of the weights the version holds (fp32), reported as
  // attn_model_memory_bytes.
  int64_t weight_bytes = 0;
};

// A reference to one loaded version; the version's memory stays while any
// handle is held. Copy it to keep a version alive (e.g. for a session).
using ModelHandle = std::shared_ptr<const Model>;

// Name → ready versions. Thread-safe: every method may be called
// concurrently; reads take a reader lock for a map lookup and a handle copy.
class ModelRepository {
 public:
  // Scans `root` and loads, for every model, the versions its
  // version_policy selects (no warm-up; attn_server uses ModelLifecycle).
  // Errors: NOT_FOUND if root does not exist; INVALID_ARGUMENT for a
  // malformed config/checkpoint, a bad version directory or an empty
  // repository (message names the file).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> LoadFromDirectory(
      const std::string& root);

  // The built-in "demo" model: d_model 256, 4 heads, version 1,
  // deterministic weights (same on every machine).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> CreateDemo();

  ModelRepository() = default;
  // Builds a repository from already loaded models (tests, demo).
  explicit ModelRepository(std::vector<ModelHandle> models);

  // `version` 0 means the newest ready version. Errors: NOT_FOUND naming
  // the model (and the versions that exist, when only the version is
  // wrong).
  absl::StatusOr<ModelHandle> Get(const std::string& name,
                                  int64_t version) const;

  // All ready versions of all models, by name then version.
  std::vector<ModelHandle> List() const;

  // Makes `model` routable, replacing (and returning) any handle of the
  // same name and version. REQUIRES: model != nullptr.
  ModelHandle Publish(ModelHandle model);

  // Takes (name, version) out of routing at once and returns its handle
  // (null if absent). Requests that already hold the handle finish on it.
  ModelHandle Remove(const std::string& name, int64_t version);

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::map<int64_t, ModelHandle>> models_
      ABSL_GUARDED_BY(mu_);
};

// Loads one model version from a directory holding config.json's parsed
// content and a checkpoint file. Exposed for tests and the fuzz target.
absl::StatusOr<std::shared_ptr<const Model>> LoadModel(
    const std::string& name, int64_t version, const ModelConfig& config,
    const std::string& checkpoint_path);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_MODEL_REPOSITORY_H_
