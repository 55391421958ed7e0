// One look at a model repository on disk: which models, their config.json
// and the version directories with their checkpoint's size and mtime. No
// checkpoint is read; loading is ModelLifecycle's job.
//
//   absl::StatusOr<std::vector<ModelDirScan>> scan = ScanRepository("/models");
//   for (const ModelDirScan& m : *scan) { ... m.versions ... }
//
// Paths stay inside the repository: a model name must be a plain directory
// name (ValidateModelName), and a config.json or checkpoint whose real path
// (symlinks resolved) leaves the repository is reported as a problem, never
// read.
//
// Thread-safety: free functions over the file system; safe to call
// concurrently (they only read).
#ifndef ATTNSERVE_SERVER_MODELS_REPOSITORY_SCAN_H_
#define ATTNSERVE_SERVER_MODELS_REPOSITORY_SCAN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attn::server {

// A checkpoint file as seen by one scan. Two scans that see the same
// (size, mtime_ns) see the same, finished file.
struct CheckpointFile {
  std::string path;  // <root>/<model>/<version>/model.safetensors
  int64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const CheckpointFile& o) const {
    return path == o.path && size == o.size && mtime_ns == o.mtime_ns;
  }
  bool operator!=(const CheckpointFile& o) const { return !(*this == o); }
};

// One <root>/<model> directory.
struct ModelDirScan {
  std::string name;
  std::string dir;
  std::string config_path;
  // config.json's bytes; empty with config_error set when it cannot be read.
  std::string config_text;
  absl::Status config_error;
  // Version directories holding a model.safetensors, by version.
  std::map<int64_t, CheckpointFile> versions;
  // Version directories that cannot be served as they are: a non-canonical
  // number ("0", "007"), no model.safetensors (yet), a checkpoint that is a
  // symlink leading out of the repository. Each names the path.
  std::vector<std::string> problems;
};

// Errors: INVALID_ARGUMENT unless `name` is a plain directory name: not
// empty, at most 255 bytes, no '/', '\\' or NUL, not "." or "..", not
// starting with '.'.
absl::Status ValidateModelName(const std::string& name);

// Scans every model directory of `root`, sorted by name (hidden ones
// skipped). Errors: NOT_FOUND if root does not exist, INVALID_ARGUMENT if
// it is not a listable directory.
absl::StatusOr<std::vector<ModelDirScan>> ScanRepository(
    const std::string& root);

// Scans <root>/<name>. Errors: INVALID_ARGUMENT for a bad name, a model
// directory that is a symlink out of the repository; NOT_FOUND when
// <root>/<name> is not a directory.
absl::StatusOr<ModelDirScan> ScanModelDir(const std::string& root,
                                          const std::string& name);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_REPOSITORY_SCAN_H_
