#include "server/models/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace attn::server {
namespace {

using Json = nlohmann::json;

struct DTypeEntry {
  const char* name;
  SafetensorsDType dtype;
  int64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {"BOOL", SafetensorsDType::kBool, 1}, {"U8", SafetensorsDType::kU8, 1},
    {"I8", SafetensorsDType::kI8, 1},     {"I16", SafetensorsDType::kI16, 2},
    {"U16", SafetensorsDType::kU16, 2},   {"F16", SafetensorsDType::kF16, 2},
    {"BF16", SafetensorsDType::kBF16, 2}, {"I32", SafetensorsDType::kI32, 4},
    {"U32", SafetensorsDType::kU32, 4},   {"F32", SafetensorsDType::kF32, 4},
    {"F64", SafetensorsDType::kF64, 8},   {"I64", SafetensorsDType::kI64, 8},
    {"U64", SafetensorsDType::kU64, 8},
};

const DTypeEntry* FindDType(const std::string& name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

const DTypeEntry& EntryOf(SafetensorsDType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  return kDTypes[0];  // unreachable: every enumerator is in the table
}

// Deepest nesting accepted in a header (a valid one has 3 levels). Deeper
// values would make recursive code such as Json::dump() overflow the stack.
constexpr int kMaxHeaderDepth = 16;

// A JSON value for an error message: compact and at most ~60 characters.
// Only flat arrays are printed, so that this never recurses deeply.
std::string Show(const Json& value) {
  if (value.is_object()) return "an object";
  if (value.is_array()) {
    for (const Json& e : value) {
      if (e.is_structured()) return "a nested array";
    }
  }
  std::string s = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

uint64_t LoadU64LE(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Parses JSON, rejecting duplicate keys in any object (nlohmann would keep
// the last one silently). Returns a discarded value on error.
Json ParseStrictJson(absl::string_view text, std::string* error) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  int depth = 0;
  bool too_deep = false;
  Json::parser_callback_t cb = [&](int /*depth*/, Json::parse_event_t event,
                                   Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        keys.emplace_back();
        if (++depth > kMaxHeaderDepth) too_deep = true;
        return !too_deep;  // false: do not build the value
      case Json::parse_event_t::array_start:
        if (++depth > kMaxHeaderDepth) too_deep = true;
        return !too_deep;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        --depth;
        break;
      case Json::parse_event_t::array_end:
        --depth;
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() &&
            !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  Json j = Json::parse(text.begin(), text.end(), cb,
                       /*allow_exceptions=*/false);
  if (too_deep) {
    *error =
        absl::StrCat("header nests deeper than ", kMaxHeaderDepth, " levels");
    j = Json(Json::value_t::discarded);
  } else if (j.is_discarded()) {
    *error = "header is not valid JSON";
  } else if (!duplicate.empty()) {
    *error = absl::StrCat("header has the key '", duplicate, "' twice");
    j = Json(Json::value_t::discarded);
  }
  return j;
}

// Validates one header entry. `data_size` is the size of the data region.
absl::Status ParseEntry(const std::string& source, const std::string& name,
                        const Json& entry, uint64_t data_size,
                        SafetensorsTensorInfo* info) {
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": tensor '", name, "': ", parts...));
  };
  if (!entry.is_object()) {
    return error("entry must be a JSON object, got ", Show(entry));
  }
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return error("unknown field '", key,
                   "' (expected dtype, shape, data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return error("missing field '", key, "'");
  }
  info->name = name;

  const Json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return error("dtype must be a string, got ", Show(dtype));
  }
  const DTypeEntry* dt = FindDType(dtype.get<std::string>());
  if (dt == nullptr) {
    return error("unknown dtype ", Show(dtype),
                 " (expected one of BOOL, U8, I8, I16, U16, F16, BF16, I32, "
                 "U32, F32, F64, I64, U64)");
  }
  info->dtype = dt->dtype;

  const Json& shape = entry["shape"];
  if (!shape.is_array()) {
    return error("shape must be an array, got ", Show(shape));
  }
  int64_t count = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const Json& d = shape[i];
    if (!d.is_number_integer()) {
      return error("shape[", i, "] must be an integer, got ", Show(d));
    }
    if (d.is_number_unsigned() &&
        d.get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return error("shape[", i, "] = ", Show(d), " is too large");
    }
    const int64_t dim = d.get<int64_t>();
    if (dim < 0) return error("shape[", i, "] = ", dim, " is negative");
    info->shape.push_back(dim);
    if (!overflow && __builtin_mul_overflow(count, dim, &count)) {
      overflow = true;
    }
  }
  int64_t byte_size = 0;
  if (overflow || __builtin_mul_overflow(count, dt->size, &byte_size)) {
    return error("shape ", Show(shape),
                 " overflows: its byte size does not fit in 64 bits");
  }
  info->num_elements = count;

  const Json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 ||
      !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    return error(
        "data_offsets must be [begin, end] with non-negative "
        "integers, got ",
        Show(offsets));
  }
  info->begin = offsets[0].get<uint64_t>();
  info->end = offsets[1].get<uint64_t>();
  if (info->begin > info->end) {
    return error("data_offsets [", info->begin, ", ", info->end,
                 "]: begin is after end");
  }
  if (info->end > data_size) {
    return error("data_offsets [", info->begin, ", ", info->end,
                 "] are out of range: the data region has ", data_size,
                 " bytes");
  }
  if (info->end - info->begin != static_cast<uint64_t>(byte_size)) {
    return error("data_offsets [", info->begin, ", ", info->end, "] span ",
                 info->end - info->begin, " bytes but dtype ", dt->name,
                 " and shape ", Show(shape), " need ", byte_size, " bytes");
  }
  return absl::OkStatus();
}

}  // namespace

const char* SafetensorsDTypeName(SafetensorsDType dtype) {
  return EntryOf(dtype).name;
}

int64_t SafetensorsDTypeSize(SafetensorsDType dtype) {
  return EntryOf(dtype).size;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string bytes,
                                                       std::string source) {
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", parts...));
  };
  const uint64_t size = bytes.size();
  if (size < 8) {
    return error("file has ", size,
                 " bytes, fewer than the 8-byte header length (truncated or "
                 "not a safetensors file)");
  }
  const uint64_t header_len = LoadU64LE(bytes.data());
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return error("header length ", header_len, " exceeds the limit of ",
                 kMaxSafetensorsHeaderBytes,
                 " bytes (not a safetensors file?)");
  }
  if (header_len > size - 8) {
    return error("header length ", header_len, " exceeds the ", size - 8,
                 " bytes that follow it (file truncated?)");
  }
  const uint64_t data_size = size - 8 - header_len;

  std::string json_error;
  const Json header = ParseStrictJson(
      absl::string_view(bytes.data() + 8, header_len), &json_error);
  if (header.is_discarded()) return error(json_error);
  if (!header.is_object()) {
    return error("header must be a JSON object, got ", Show(header));
  }

  SafetensorsFile file;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) {
        return error("__metadata__ must be an object, got ", Show(entry));
      }
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return error("__metadata__ '", key, "' must be a string, got ",
                       Show(value));
        }
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    SafetensorsTensorInfo info;
    absl::Status s = ParseEntry(source, name, entry, data_size, &info);
    if (!s.ok()) return s;
    file.tensors_.push_back(std::move(info));
  }

  // No two tensors may share a byte. Empty tensors occupy nothing.
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const SafetensorsTensorInfo& t : file.tensors_) {
    if (t.end > t.begin) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsTensorInfo* a, const SafetensorsTensorInfo* b) {
              return a->begin < b->begin;
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensorInfo& prev = *by_offset[i - 1];
    const SafetensorsTensorInfo& cur = *by_offset[i];
    if (cur.begin < prev.end) {
      return error("tensor '", cur.name, "' (bytes [", cur.begin, ", ", cur.end,
                   ")) overlaps tensor '", prev.name, "' (bytes [", prev.begin,
                   ", ", prev.end, "))");
    }
  }

  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
              return a.name < b.name;
            });
  file.source_ = std::move(source);
  file.bytes_ = std::move(bytes);
  file.data_start_ = 8 + header_len;
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::ReadFile(
    const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    return absl::NotFoundError(
        absl::StrCat(path, ": checkpoint file does not exist"));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": checkpoint is not a regular file"));
  }
  const uintmax_t size = std::filesystem::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": cannot open checkpoint file: ", std::strerror(errno)));
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": read error after ", in.gcount(), " of ", size, " bytes"));
  }
  return Parse(std::move(bytes), path);
}

const SafetensorsTensorInfo* SafetensorsFile::Find(
    absl::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const SafetensorsTensorInfo& t,
                                absl::string_view n) { return t.name < n; });
  if (it == tensors_.end() || it->name != name) return nullptr;
  return &*it;
}

absl::StatusOr<absl::string_view> SafetensorsFile::RawData(
    absl::string_view name) const {
  const SafetensorsTensorInfo* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(source_, ": no tensor named '", name, "'"));
  }
  // Re-checked here so that a logic error can never read out of bounds.
  if (t->end < t->begin || data_start_ > bytes_.size() ||
      t->end > bytes_.size() - data_start_) {
    return absl::InternalError(
        absl::StrCat(source_, ": tensor '", name, "': offsets out of bounds"));
  }
  return absl::string_view(bytes_.data() + data_start_ + t->begin,
                           t->end - t->begin);
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadAsFloat32(
    absl::string_view name) const {
  absl::StatusOr<absl::string_view> raw = RawData(name);
  if (!raw.ok()) return raw.status();
  const SafetensorsTensorInfo& t = *Find(name);
  const auto* p = reinterpret_cast<const unsigned char*>(raw->data());
  const size_t n = static_cast<size_t>(t.num_elements);
  const int64_t itemsize = SafetensorsDTypeSize(t.dtype);
  if (raw->size() != n * itemsize) {
    return absl::InternalError(absl::StrCat(
        source_, ": tensor '", name, "': byte size does not match shape"));
  }
  std::vector<float> out(n);
  switch (t.dtype) {
    case SafetensorsDType::kF32:
      for (size_t i = 0; i < n; ++i) {
        const unsigned char* q = p + 4 * i;
        out[i] = BitsFloat(uint32_t{q[0]} | uint32_t{q[1]} << 8 |
                           uint32_t{q[2]} << 16 | uint32_t{q[3]} << 24);
      }
      break;
    case SafetensorsDType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        out[i] = BFloat16ToFloat(
            static_cast<uint16_t>(p[2 * i] | p[2 * i + 1] << 8));
      }
      break;
    case SafetensorsDType::kF16:
      for (size_t i = 0; i < n; ++i) {
        out[i] =
            HalfToFloat(static_cast<uint16_t>(p[2 * i] | p[2 * i + 1] << 8));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(source_, ": tensor '", name, "' has dtype ",
                       SafetensorsDTypeName(t.dtype),
                       "; expected a floating-point dtype (F32, BF16 or F16)"));
  }
  return out;
}

std::string EncodeFloats(const std::vector<float>& values,
                         SafetensorsDType dtype) {
  std::string out;
  if (dtype == SafetensorsDType::kF32) {
    out.reserve(values.size() * 4);
    for (float v : values) {
      const uint32_t u = FloatBits(v);
      for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(u >> 8 * i));
    }
    return out;
  }
  out.reserve(values.size() * 2);
  for (float v : values) {
    const uint16_t u =
        dtype == SafetensorsDType::kBF16 ? FloatToBFloat16(v) : FloatToHalf(v);
    out.push_back(static_cast<char>(u & 0xff));
    out.push_back(static_cast<char>(u >> 8));
  }
  return out;
}

std::string SerializeSafetensors(
    const std::vector<SafetensorsTensorData>& tensors,
    const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  std::string data;
  for (const SafetensorsTensorData& t : tensors) {
    const uint64_t begin = data.size();
    data += t.data;
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {begin, data.size()}}};
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  // The reference implementation pads the header with spaces to a multiple
  // of 8 so that the data region is aligned.
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  return SafetensorsFromHeader(text, data);
}

std::string SafetensorsFromHeader(absl::string_view header_json,
                                  absl::string_view data) {
  std::string out;
  const uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> 8 * i));
  out.append(header_json.data(), header_json.size());
  out.append(data.data(), data.size());
  return out;
}

absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::InternalError(absl::StrCat(
        path, ": cannot open for writing: ", std::strerror(errno)));
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    return absl::InternalError(absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

}  // namespace attn::server
