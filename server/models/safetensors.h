// safetensors checkpoint files: a validating reader and a small writer.
//
// Format (https://github.com/huggingface/safetensors):
//   [8 bytes] N, little-endian u64: length of the header
//   [N bytes] JSON object: {"<tensor>": {"dtype": "F32", "shape": [2, 3],
//                                         "data_offsets": [begin, end]}, ...,
//                           "__metadata__": {"<key>": "<string>", ...}}
//   [rest]    data region; data_offsets are relative to its first byte.
//
// Usage:
//   absl::StatusOr<SafetensorsFile> file = SafetensorsFile::ReadFile(path);
//   if (!file.ok()) return file.status();
//   absl::StatusOr<std::vector<float>> w = file->ReadAsFloat32("out.weight");
//
// The whole header is validated before any tensor data is touched: header
// length, JSON syntax, the exact field set of every entry, known dtypes,
// non-negative dims, no overflow of prod(shape) * itemsize, byte sizes that
// match the shapes, offsets inside the data region and no overlapping tensors.
// Every error is INVALID_ARGUMENT and names the file, the tensor and the
// problem. Bytes of the data region that no tensor uses are allowed (the
// reference implementation rejects them; we only note it in the docs).
#ifndef ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_
#define ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/float16.h"

namespace attn::server {

// Element types of the safetensors format.
enum class SafetensorsDType {
  kBool,
  kU8,
  kI8,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// "F32", "BF16", ... as written in headers.
const char* SafetensorsDTypeName(SafetensorsDType dtype);
// Bytes per element (1 for BOOL).
int64_t SafetensorsDTypeSize(SafetensorsDType dtype);

// Header entry of one tensor, validated.
struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  int64_t num_elements = 0;  // prod(shape); 1 for a scalar (shape [])
  uint64_t begin = 0;        // byte offsets in the data region
  uint64_t end = 0;
};

// Largest header accepted (the reference implementation uses the same bound).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// A parsed safetensors file held in memory. Immutable after construction:
// const methods are safe to call concurrently.
class SafetensorsFile {
 public:
  // Parses `bytes`, a whole file. `source` names the file in messages.
  // Errors: INVALID_ARGUMENT naming `source`, the tensor and the problem.
  static absl::StatusOr<SafetensorsFile> Parse(std::string bytes,
                                               std::string source);

  // Reads the file at `path` once into memory and parses it. Errors:
  // NOT_FOUND if it does not exist, INVALID_ARGUMENT if it is malformed.
  static absl::StatusOr<SafetensorsFile> ReadFile(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;

  const std::string& source() const { return source_; }
  // Tensors sorted by name.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  // The "__metadata__" object (string values only), empty if absent.
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // nullptr if there is no tensor `name`.
  const SafetensorsTensorInfo* Find(absl::string_view name) const;

  // The raw little-endian bytes of tensor `name`. Errors: NOT_FOUND.
  absl::StatusOr<absl::string_view> RawData(absl::string_view name) const;

  // Tensor `name` converted to fp32 (F32, BF16 and F16 only; F16
  // subnormals, infinities and NaNs are converted exactly). Errors:
  // NOT_FOUND if absent; INVALID_ARGUMENT for other dtypes.
  absl::StatusOr<std::vector<float>> ReadAsFloat32(
      absl::string_view name) const;

 private:
  SafetensorsFile() = default;

  std::string source_;
  std::string bytes_;        // the whole file
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// --- Writer (tests, the demo repository and tools) ---

// One tensor to write. `data` holds exactly prod(shape) * itemsize bytes,
// little-endian.
struct SafetensorsTensorData {
  std::string name;
  std::string dtype;  // "F32", "BF16", "F16", ... (written verbatim)
  std::vector<int64_t> shape;
  std::string data;
};

// fp32 values encoded as the bytes of an F32, BF16 or F16 tensor.
// REQUIRES: dtype is kF32, kBF16 or kF16.
std::string EncodeFloats(const std::vector<float>& values,
                         SafetensorsDType dtype);

// Serialises tensors (packed in the given order) and metadata into the bytes
// of a safetensors file. Does not validate: tests use it to craft
// malformed files.
std::string SerializeSafetensors(
    const std::vector<SafetensorsTensorData>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Builds a file from a raw header JSON text and data region (tests).
std::string SafetensorsFromHeader(absl::string_view header_json,
                                  absl::string_view data);

// Writes `bytes` to `path` (replacing it). Errors: INTERNAL on I/O failure.
absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_MODELS_SAFETENSORS_H_
