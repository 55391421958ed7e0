#include "server/models/model_repository.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/demo_model.h"
#include "server/models/repository_scan.h"

namespace attn::server {
namespace {

absl::StatusOr<std::shared_ptr<const Model>> BuildModel(
    const std::string& name, int64_t version, const ModelConfig& config,
    const std::string& source, const kernels::AttentionConfig& attention,
    kernels::AttentionWeights weights) {
  const int64_t weight_bytes = static_cast<int64_t>(
      sizeof(float) *
      (weights.wq.size() + weights.wk.size() + weights.wv.size() +
       weights.wo.size() + weights.bq.size() + weights.bk.size() +
       weights.bv.size() + weights.bo.size()));
  absl::StatusOr<std::unique_ptr<kernels::MultiHeadAttention>> kernel =
      kernels::MultiHeadAttention::Create(attention, std::move(weights));
  if (!kernel.ok()) {
    return absl::Status(
        kernel.status().code(),
        absl::StrCat(source, ": cannot build model '", name, "' version ",
                     version, ": ", kernel.status().message()));
  }
  auto model = std::make_shared<Model>();
  model->name = name;
  model->version = version;
  model->source = source;
  model->config = config;
  model->attention = (*kernel)->config();
  model->kernel = *std::move(kernel);
  model->weight_bytes = weight_bytes;
  return std::shared_ptr<const Model>(std::move(model));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> LoadModel(
    const std::string& name, int64_t version, const ModelConfig& config,
    const std::string& checkpoint_path) {
  absl::StatusOr<AttentionCheckpoint> checkpoint =
      LoadAttentionCheckpoint(checkpoint_path, config);
  if (!checkpoint.ok()) return checkpoint.status();
  return BuildModel(name, version, config, checkpoint_path, checkpoint->config,
                    std::move(checkpoint->weights));
}

absl::StatusOr<std::unique_ptr<ModelRepository>>
ModelRepository::LoadFromDirectory(const std::string& root) {
  absl::StatusOr<std::vector<ModelDirScan>> scan = ScanRepository(root);
  if (!scan.ok()) return scan.status();
  std::vector<ModelHandle> models;
  for (const ModelDirScan& dir : *scan) {
    if (!dir.config_error.ok()) return dir.config_error;
    absl::StatusOr<ModelConfig> config =
        ParseModelConfig(dir.config_text, dir.config_path);
    if (!config.ok()) return config.status();
    if (!dir.problems.empty()) {
      return absl::InvalidArgumentError(dir.problems.front());
    }
    std::vector<int64_t> available;
    for (const auto& [version, file] : dir.versions) {
      available.push_back(version);
    }
    const std::vector<int64_t> wanted =
        config->version_policy.Select(available);
    if (wanted.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir.dir,
          available.empty()
              ? ": model has no version directory (expected "
                "<N>/model.safetensors with N >= 1)"
              : absl::StrCat(": version_policy ",
                             config->version_policy.ToString(),
                             " selects none of the versions on disk")));
    }
    for (int64_t version : wanted) {
      absl::StatusOr<ModelHandle> model =
          LoadModel(dir.name, version, *config, dir.versions.at(version).path);
      if (!model.ok()) return model.status();
      models.push_back(*std::move(model));
    }
  }
  if (models.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        root,
        ": model repository is empty (expected <model>/config.json and "
        "<model>/<version>/model.safetensors)"));
  }
  return std::make_unique<ModelRepository>(std::move(models));
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::CreateDemo() {
  const ModelConfig config = DemoModelConfig();
  absl::StatusOr<kernels::AttentionConfig> attention =
      ResolveAttentionConfig(config, kDemoDModel);
  if (!attention.ok()) return attention.status();
  absl::StatusOr<std::shared_ptr<const Model>> model =
      BuildModel(kDemoModelName, kDemoModelVersion, config, kDemoSource,
                 *attention, DemoWeights());
  if (!model.ok()) return model.status();
  return std::make_unique<ModelRepository>(
      std::vector<std::shared_ptr<const Model>>{*std::move(model)});
}

ModelRepository::ModelRepository(std::vector<ModelHandle> models) {
  for (ModelHandle& m : models) {
    models_[m->name][m->version] = std::move(m);
  }
}

absl::StatusOr<ModelHandle> ModelRepository::Get(const std::string& name,
                                                 int64_t version) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end() || it->second.empty()) {
    std::vector<std::string> names;
    for (const auto& [n, versions] : models_) {
      if (!versions.empty()) names.push_back(n);
    }
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' not found; available models: ",
                     names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
  }
  const auto& versions = it->second;
  if (version == 0) return versions.rbegin()->second;
  auto v = versions.find(version);
  if (v == versions.end()) {
    std::vector<int64_t> available;
    for (const auto& [n, m] : versions) available.push_back(n);
    return absl::NotFoundError(absl::StrCat(
        "model '", name, "' has no version ", version, "; available versions: ",
        absl::StrJoin(available, ", "), " (0 selects the newest)"));
  }
  return v->second;
}

std::vector<ModelHandle> ModelRepository::List() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<ModelHandle> out;
  for (const auto& [name, versions] : models_) {
    for (const auto& [version, model] : versions) out.push_back(model);
  }
  return out;
}

ModelHandle ModelRepository::Publish(ModelHandle model) {
  absl::MutexLock lock(&mu_);
  ModelHandle& slot = models_[model->name][model->version];
  ModelHandle previous = std::move(slot);
  slot = std::move(model);
  return previous;
}

ModelHandle ModelRepository::Remove(const std::string& name, int64_t version) {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return nullptr;
  auto v = it->second.find(version);
  if (v == it->second.end()) return nullptr;
  ModelHandle removed = std::move(v->second);
  it->second.erase(v);
  if (it->second.empty()) models_.erase(it);
  return removed;
}

}  // namespace attn::server
