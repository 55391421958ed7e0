#include "server/models/model_repository.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/models/checkpoint_loader.h"
#include "server/models/demo_model.h"

namespace attn::server {
namespace {

namespace fs = std::filesystem;

// A version directory name: a positive decimal integer without leading zeros.
// Returns 0 for names that are not numeric at all (ignored by the scan) and
// -1 for numeric names that are not valid versions.
int64_t ParseVersionDir(const std::string& name) {
  if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
        return c >= '0' && c <= '9';
      })) {
    return 0;
  }
  if (name[0] == '0' || name.size() > 18) return -1;
  return std::stoll(name);
}

absl::StatusOr<std::string> ReadTextFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": cannot open for reading"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Sorted names of the subdirectories of `dir` (hidden ones skipped).
absl::StatusOr<std::vector<std::string>> SubDirectories(const fs::path& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code type_ec;
    if (it->is_directory(type_ec)) names.push_back(name);
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir.string(), ": cannot list directory: ", ec.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status LoadModelDir(const fs::path& model_dir, const std::string& name,
                          std::vector<std::shared_ptr<const Model>>* models) {
  const fs::path config_path = model_dir / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(),
                     ": missing: every model directory "
                     "needs a config.json"));
  }
  absl::StatusOr<std::string> text = ReadTextFile(config_path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig(*text, config_path.string());
  if (!config.ok()) return config.status();

  absl::StatusOr<std::vector<std::string>> subdirs = SubDirectories(model_dir);
  if (!subdirs.ok()) return subdirs.status();
  int loaded = 0;
  for (const std::string& dir : *subdirs) {
    const int64_t version = ParseVersionDir(dir);
    if (version == 0) continue;  // not a version directory
    if (version < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          (model_dir / dir).string(),
          ": invalid version directory: versions are integers >= 1 written "
          "without leading zeros"));
    }
    const fs::path checkpoint = model_dir / dir / "model.safetensors";
    if (!fs::is_regular_file(checkpoint, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat((model_dir / dir).string(),
                       ": version directory has no model.safetensors"));
    }
    absl::StatusOr<std::shared_ptr<const Model>> model =
        LoadModel(name, version, *config, checkpoint.string());
    if (!model.ok()) return model.status();
    models->push_back(*std::move(model));
    ++loaded;
  }
  if (loaded == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir.string(),
        ": model has no version directory (expected <N>/model.safetensors "
        "with N >= 1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Model>> BuildModel(
    const std::string& name, int64_t version, const ModelConfig& config,
    const std::string& source, const kernels::AttentionConfig& attention,
    kernels::AttentionWeights weights) {
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
  std::error_code ec;
  if (!fs::exists(root, ec)) {
    return absl::NotFoundError(
        absl::StrCat(root, ": model repository does not exist"));
  }
  if (!fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ": model repository is not a directory"));
  }
  absl::StatusOr<std::vector<std::string>> names = SubDirectories(root);
  if (!names.ok()) return names.status();
  std::vector<std::shared_ptr<const Model>> models;
  for (const std::string& name : *names) {
    absl::Status s = LoadModelDir(fs::path(root) / name, name, &models);
    if (!s.ok()) return s;
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

ModelRepository::ModelRepository(
    std::vector<std::shared_ptr<const Model>> models) {
  for (std::shared_ptr<const Model>& m : models) {
    models_[m->name][m->version] = std::move(m);
  }
}

absl::StatusOr<std::shared_ptr<const Model>> ModelRepository::Get(
    const std::string& name, int64_t version) const {
  auto it = models_.find(name);
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, versions] : models_) names.push_back(n);
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' not found; available models: ",
                     names.empty() ? "(none)" : absl::StrJoin(names, ", ")));
  }
  const auto& versions = it->second;
  if (version == 0 && !versions.empty()) return versions.rbegin()->second;
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

std::vector<std::shared_ptr<const Model>> ModelRepository::List() const {
  std::vector<std::shared_ptr<const Model>> out;
  for (const auto& [name, versions] : models_) {
    for (const auto& [version, model] : versions) out.push_back(model);
  }
  return out;
}

}  // namespace attn::server
