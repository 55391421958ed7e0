#include "client/array_io.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace attn {
namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicSize = 6;

absl::Status NpyError(absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": not a supported .npy file: ", what));
}

// Returns the text after `'key':` in a .npy header dict, or "" if absent.
absl::string_view HeaderValue(absl::string_view header, absl::string_view key) {
  const std::string quoted = absl::StrCat("'", key, "'");
  size_t pos = header.find(quoted);
  if (pos == absl::string_view::npos) return "";
  pos = header.find(':', pos + quoted.size());
  if (pos == absl::string_view::npos) return "";
  return absl::StripLeadingAsciiWhitespace(header.substr(pos + 1));
}

int64_t Product(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Appends the nested-list JSON of values[offset...] with shape[dim...].
void AppendJson(absl::Span<const int64_t> shape, size_t dim,
                absl::Span<const float> values, size_t& offset,
                std::string& out) {
  if (dim == shape.size()) {
    const float v = values[offset++];
    if (!std::isfinite(v)) {
      out += "null";  // JSON has no NaN/Inf
      return;
    }
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%.9g", static_cast<double>(v));
    out += buffer;
    return;
  }
  out += '[';
  for (int64_t i = 0; i < shape[dim]; ++i) {
    if (i > 0) out += ", ";
    AppendJson(shape, dim + 1, values, offset, out);
  }
  out += ']';
}

// Flattens `node`, checking that it matches `shape` from `dim` on.
absl::Status FlattenJson(const nlohmann::json& node,
                         const std::vector<int64_t>& shape, size_t dim,
                         absl::string_view name, std::vector<float>& out) {
  if (dim == shape.size()) {
    if (!node.is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": expected a number at depth ", dim, ", got ",
                       node.type_name()));
    }
    out.push_back(node.get<float>());
    return absl::OkStatus();
  }
  if (!node.is_array() || static_cast<int64_t>(node.size()) != shape[dim]) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": ragged nested lists: expected a list of ",
                     shape[dim], " items at depth ", dim, ", got ",
                     node.is_array() ? absl::StrCat(node.size(), " items")
                                     : std::string(node.type_name())));
  }
  for (const nlohmann::json& child : node) {
    absl::Status s = FlattenJson(child, shape, dim + 1, name, out);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FloatArray> ParseNpy(absl::string_view bytes,
                                    absl::string_view name) {
  if (bytes.size() < 10 || bytes.substr(0, kNpyMagicSize) !=
                               absl::string_view(kNpyMagic, kNpyMagicSize)) {
    return NpyError(name, "missing the \\x93NUMPY magic");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len =
        static_cast<unsigned char>(bytes[8]) |
        (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return NpyError(name, "truncated header");
    for (int i = 3; i >= 0; --i) {
      header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    }
    header_start = 12;
  } else {
    return NpyError(name, absl::StrCat("format version ", major,
                                       ".x; expected 1.0, 2.0 or 3.0"));
  }
  if (bytes.size() < header_start + header_len) {
    return NpyError(name, "truncated header");
  }
  const absl::string_view header = bytes.substr(header_start, header_len);

  absl::string_view descr = HeaderValue(header, "descr");
  if (!absl::StartsWith(descr, "'<f4'")) {
    return NpyError(name,
                    absl::StrCat("dtype ", descr.substr(0, descr.find(',')),
                                 "; expected '<f4' (float32, little-endian): "
                                 "convert with a.astype(np.float32)"));
  }
  if (!absl::StartsWith(HeaderValue(header, "fortran_order"), "False")) {
    return NpyError(name,
                    "Fortran order; expected C order "
                    "(np.ascontiguousarray)");
  }
  absl::string_view shape_text = HeaderValue(header, "shape");
  if (!absl::ConsumePrefix(&shape_text, "(")) {
    return NpyError(name, "header has no 'shape' tuple");
  }
  shape_text = shape_text.substr(0, shape_text.find(')'));
  FloatArray array;
  for (absl::string_view dim :
       absl::StrSplit(shape_text, ',', absl::SkipWhitespace())) {
    int64_t value;
    if (!absl::SimpleAtoi(dim, &value) || value < 0) {
      return NpyError(name, absl::StrCat("bad dimension '", dim, "'"));
    }
    array.shape.push_back(value);
  }
  const int64_t count = Product(array.shape);
  const absl::string_view data = bytes.substr(header_start + header_len);
  if (static_cast<int64_t>(data.size()) != count * 4) {
    return NpyError(
        name,
        absl::StrCat("shape (", absl::StrJoin(array.shape, ","), ") needs ",
                     count * 4, " bytes of data, file has ", data.size()));
  }
  array.values.resize(static_cast<size_t>(count));
  std::memcpy(array.values.data(), data.data(), data.size());
  return array;
}

std::string SerializeNpy(absl::Span<const int64_t> shape,
                         absl::Span<const float> values) {
  std::string shape_text = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) shape_text += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (",
                   shape_text, "), }");
  // Pad with spaces so that magic + length + header + '\n' is a multiple of
  // 64 bytes, as NumPy does.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kNpyMagic, kNpyMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(reinterpret_cast<const char*>(values.data()),
             values.size() * sizeof(float));
  return out;
}

absl::StatusOr<FloatArray> ParseJsonArray(absl::string_view text,
                                          absl::string_view name) {
  nlohmann::json root = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                              /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": invalid JSON; expected nested lists of numbers"));
  }
  FloatArray array;
  // The shape follows the first element at each depth; FlattenJson checks
  // that every other element agrees.
  for (const nlohmann::json* node = &root; node->is_array();
       node = &node->front()) {
    array.shape.push_back(static_cast<int64_t>(node->size()));
    if (node->empty()) break;
  }
  absl::Status s = FlattenJson(root, array.shape, 0, name, array.values);
  if (!s.ok()) return s;
  return array;
}

std::string SerializeJsonArray(absl::Span<const int64_t> shape,
                               absl::Span<const float> values) {
  std::string out;
  size_t offset = 0;
  AppendJson(shape, 0, values, offset, out);
  out += '\n';
  return out;
}

absl::StatusOr<FloatArray> ReadArrayFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  }
  std::string bytes((std::istreambuf_iterator<char>(file)),
                    std::istreambuf_iterator<char>());
  if (absl::EndsWith(path, ".json")) return ParseJsonArray(bytes, path);
  return ParseNpy(bytes, path);
}

absl::Status WriteArrayFile(const std::string& path,
                            absl::Span<const int64_t> shape,
                            absl::Span<const float> values) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open '", path, "' for writing"));
  }
  const std::string bytes = absl::EndsWith(path, ".json")
                                ? SerializeJsonArray(shape, values)
                                : SerializeNpy(shape, values);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) {
    return absl::InternalError(absl::StrCat("failed writing '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace attn
