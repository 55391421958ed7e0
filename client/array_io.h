// Reading and writing float arrays as NumPy .npy files and JSON nested lists
// (the file formats attn_cli accepts for --input/--key/--value/--output).
//
// .npy: format version 1.0 (written) or 1.0/2.0/3.0 (read), dtype '<f4',
// C order. JSON: nested lists of numbers, rectangular, e.g.
// [[0.5, 1.0], [2.0, -1.0]] has shape [2, 2].
//
// All functions are thread-safe (no shared state).
#ifndef ATTNSERVE_CLIENT_ARRAY_IO_H_
#define ATTNSERVE_CLIENT_ARRAY_IO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace attn {

// A dense row-major float32 array.
struct FloatArray {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Parses the bytes of a .npy file. `name` is only used in messages.
// Errors: INVALID_ARGUMENT for a bad magic, header, dtype other than '<f4',
// Fortran order or a data size that does not match the shape.
absl::StatusOr<FloatArray> ParseNpy(absl::string_view bytes,
                                    absl::string_view name);

// The bytes of a version 1.0 .npy file ('<f4', C order).
// REQUIRES: values.size() == product of shape.
std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> values);

// Parses JSON nested lists. Errors: INVALID_ARGUMENT for invalid JSON,
// ragged lists, or non-numeric leaves (message names `name`).
absl::StatusOr<FloatArray> ParseJsonArray(absl::string_view text,
                                          absl::string_view name);

// JSON nested lists with the given shape (a scalar for an empty shape).
// REQUIRES: values.size() == product of shape.
std::string SerializeJsonArray(absl::Span<const int64_t> shape,
                               absl::Span<const float> values);

// Reads `path` as .npy or, when it ends in ".json", as JSON.
// Errors: NOT_FOUND if the file cannot be opened; parse errors as above.
absl::StatusOr<FloatArray> ReadArrayFile(const std::string& path);

// Writes .npy or, when `path` ends in ".json", JSON.
// Errors: PERMISSION_DENIED/INTERNAL naming the file when writing fails.
absl::Status WriteArrayFile(const std::string& path,
                            absl::Span<const int64_t> shape,
                            absl::Span<const float> values);

}  // namespace attn

#endif  // ATTNSERVE_CLIENT_ARRAY_IO_H_
