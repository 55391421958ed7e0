#include "server/models/repository_scan.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace attn::server {
namespace {

namespace fs = std::filesystem;

// config.json larger than this is refused unread (it is a few hundred bytes).
constexpr int64_t kMaxConfigBytes = 1 << 20;

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

// True when the real path of `path` (symlinks resolved) is inside
// `real_root` (itself canonical).
bool StaysInside(const fs::path& path, const fs::path& real_root) {
  std::error_code ec;
  const fs::path real = fs::canonical(path, ec);
  if (ec) return false;
  const std::string root = real_root.string();
  const std::string p = real.string();
  return p.size() > root.size() && absl::StartsWith(p, root) &&
         (p[root.size()] == '/' || root == "/");
}

absl::StatusOr<std::string> ReadSmallFile(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": cannot read: ", ec.message()));
  }
  if (size > static_cast<uintmax_t>(kMaxConfigBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": is ", size, " bytes; at most ",
                     kMaxConfigBytes, " are allowed"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": cannot open for reading"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

ModelDirScan ScanDir(const fs::path& real_root, const fs::path& model_dir,
                     const std::string& name) {
  ModelDirScan scan;
  scan.name = name;
  scan.dir = model_dir.string();
  const fs::path config = model_dir / "config.json";
  scan.config_path = config.string();
  std::error_code ec;
  if (!fs::is_regular_file(config, ec)) {
    scan.config_error = absl::InvalidArgumentError(
        absl::StrCat(scan.config_path,
                     ": missing: every model directory needs a "
                     "config.json"));
  } else if (!StaysInside(config, real_root)) {
    scan.config_error = absl::InvalidArgumentError(absl::StrCat(
        scan.config_path, ": is a symlink leading out of the repository"));
  } else {
    absl::StatusOr<std::string> text = ReadSmallFile(config);
    if (text.ok()) {
      scan.config_text = *std::move(text);
    } else {
      scan.config_error = text.status();
    }
  }
  absl::StatusOr<std::vector<std::string>> subdirs = SubDirectories(model_dir);
  if (!subdirs.ok()) {
    scan.problems.push_back(std::string(subdirs.status().message()));
    return scan;
  }
  for (const std::string& dir : *subdirs) {
    const int64_t version = ParseVersionDir(dir);
    if (version == 0) continue;  // not a version directory
    const fs::path version_dir = model_dir / dir;
    if (version < 0) {
      scan.problems.push_back(absl::StrCat(
          version_dir.string(),
          ": invalid version directory: versions are integers >= 1 written "
          "without leading zeros"));
      continue;
    }
    const fs::path checkpoint = version_dir / "model.safetensors";
    struct stat st;
    if (::stat(checkpoint.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      scan.problems.push_back(
          absl::StrCat(version_dir.string(),
                       ": version directory has no model.safetensors"));
      continue;
    }
    if (!StaysInside(checkpoint, real_root)) {
      scan.problems.push_back(absl::StrCat(
          checkpoint.string(), ": is a symlink leading out of the repository"));
      continue;
    }
    CheckpointFile file;
    file.path = checkpoint.string();
    file.size = static_cast<int64_t>(st.st_size);
    file.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                    st.st_mtim.tv_nsec;
    scan.versions[version] = std::move(file);
  }
  return scan;
}

absl::StatusOr<fs::path> RealRoot(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) {
    return absl::NotFoundError(
        absl::StrCat(root, ": model repository does not exist"));
  }
  if (!fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ": model repository is not a directory"));
  }
  fs::path real = fs::canonical(root, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(root, ": cannot resolve: ", ec.message()));
  }
  return real;
}

}  // namespace

absl::Status ValidateModelName(const std::string& name) {
  const char* problem = nullptr;
  if (name.empty()) {
    problem = "is empty";
  } else if (name.size() > 255) {
    problem = "is longer than 255 bytes";
  } else if (name == "." || name == "..") {
    problem = "is a relative path";
  } else if (name.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
    problem = "contains a path separator or NUL";
  } else if (name[0] == '.') {
    problem = "starts with '.' (hidden directories are not models)";
  }
  if (problem == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model name '", name.substr(0, 64), "' ", problem,
                   "; model names are plain directory names of the "
                   "repository"));
}

absl::StatusOr<std::vector<ModelDirScan>> ScanRepository(
    const std::string& root) {
  absl::StatusOr<fs::path> real_root = RealRoot(root);
  if (!real_root.ok()) return real_root.status();
  absl::StatusOr<std::vector<std::string>> names = SubDirectories(root);
  if (!names.ok()) return names.status();
  std::vector<ModelDirScan> out;
  for (const std::string& name : *names) {
    const fs::path dir = fs::path(root) / name;
    if (!StaysInside(dir, *real_root)) continue;  // symlink out: not ours
    out.push_back(ScanDir(*real_root, dir, name));
  }
  return out;
}

absl::StatusOr<ModelDirScan> ScanModelDir(const std::string& root,
                                          const std::string& name) {
  if (absl::Status s = ValidateModelName(name); !s.ok()) return s;
  absl::StatusOr<fs::path> real_root = RealRoot(root);
  if (!real_root.ok()) return real_root.status();
  const fs::path dir = fs::path(root) / name;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' has no directory in the repository (",
                     dir.string(), ")"));
  }
  if (!StaysInside(dir, *real_root)) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir.string(), ": is a symlink leading out of the repository"));
  }
  return ScanDir(*real_root, dir, name);
}

}  // namespace attn::server
