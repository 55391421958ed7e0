#include "server/api/tensor_codec.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tensor_codec assumes a little-endian host (wire format is LE)");

namespace attn::server {
namespace {

std::string ShapeString(const v1::Tensor& tensor) {
  return absl::StrCat("[", absl::StrJoin(tensor.shape(), ", "), "]");
}

// Checks shape and exact byte length; returns the element count.
absl::StatusOr<int64_t> CheckLayout(const v1::Tensor& tensor,
                                    absl::string_view name, int64_t itemsize) {
  absl::StatusOr<int64_t> n = NumElements(tensor, name);
  if (!n.ok()) return n.status();
  int64_t bytes = 0;
  if (__builtin_mul_overflow(*n, itemsize, &bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " shape ", ShapeString(tensor),
                     " is too large: its byte size overflows int64"));
  }
  if (static_cast<int64_t>(tensor.data().size()) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " data has ", tensor.data().size(), " bytes, but shape ",
        ShapeString(tensor), " of ", DataTypeName(tensor.dtype()), " needs ",
        *n, " x ", itemsize, " = ", bytes, " bytes"));
  }
  return *n;
}

absl::Status CheckFinite(const std::vector<float>& values,
                         absl::string_view name, NonFinitePolicy policy) {
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = values[i];
    if (std::isfinite(v)) continue;
    if (policy == NonFinitePolicy::kAllowNegativeInfinity && std::isinf(v) &&
        v < 0) {
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(name, " holds a non-finite value (",
                     std::isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"),
                     ") at flat index ", i,
                     policy == NonFinitePolicy::kReject
                         ? "; every value must be finite"
                         : "; only finite values and -Inf are allowed"));
  }
  return absl::OkStatus();
}

}  // namespace

int64_t DataTypeSize(v1::DataType dtype) {
  switch (dtype) {
    case v1::FLOAT32:
      return 4;
    case v1::BFLOAT16:
    case v1::FLOAT16:
      return 2;
    case v1::BOOL:
      return 1;
    default:
      return 0;
  }
}

std::string DataTypeName(int dtype) {
  if (v1::DataType_IsValid(dtype)) {
    return v1::DataType_Name(static_cast<v1::DataType>(dtype));
  }
  return absl::StrCat("DataType(", dtype, ")");
}

absl::StatusOr<int64_t> NumElements(const v1::Tensor& tensor,
                                    absl::string_view name) {
  int64_t n = 1;
  for (int i = 0; i < tensor.shape_size(); ++i) {
    const int64_t d = tensor.shape(i);
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " shape ", ShapeString(tensor), " has dimension ",
                       i, " = ", d, "; dimensions must be >= 0"));
    }
    if (__builtin_mul_overflow(n, d, &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " shape ", ShapeString(tensor),
                       " is too large: its element count overflows int64"));
    }
  }
  return n;
}

absl::Status DecodeFloatTensor(const v1::Tensor& tensor, absl::string_view name,
                               NonFinitePolicy policy,
                               std::vector<float>* out) {
  const v1::DataType dtype = tensor.dtype();
  if (dtype != v1::FLOAT32 && dtype != v1::BFLOAT16 && dtype != v1::FLOAT16) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " dtype is ", DataTypeName(dtype),
                     "; expected FLOAT32, BFLOAT16 or FLOAT16"));
  }
  absl::StatusOr<int64_t> n = CheckLayout(tensor, name, DataTypeSize(dtype));
  if (!n.ok()) return n.status();
  out->resize(static_cast<size_t>(*n));
  const char* src = tensor.data().data();
  if (dtype == v1::FLOAT32) {
    if (*n > 0) std::memcpy(out->data(), src, *n * sizeof(float));
  } else {
    const bool bf16 = dtype == v1::BFLOAT16;
    for (int64_t i = 0; i < *n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * i, sizeof(bits));
      (*out)[i] = bf16 ? BFloat16ToFloat(bits) : HalfToFloat(bits);
    }
  }
  return CheckFinite(*out, name, policy);
}

absl::Status DecodeBoolTensor(const v1::Tensor& tensor, absl::string_view name,
                              std::vector<uint8_t>* out) {
  if (tensor.dtype() != v1::BOOL) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " dtype is ", DataTypeName(tensor.dtype()), "; expected BOOL"));
  }
  absl::StatusOr<int64_t> n = CheckLayout(tensor, name, 1);
  if (!n.ok()) return n.status();
  out->resize(static_cast<size_t>(*n));
  const std::string& data = tensor.data();
  for (int64_t i = 0; i < *n; ++i) (*out)[i] = data[i] != 0 ? 1 : 0;
  return absl::OkStatus();
}

void EncodeFloatTensor(const float* data, absl::Span<const int64_t> shape,
                       v1::DataType dtype, v1::Tensor* out) {
  int64_t n = 1;
  out->clear_shape();
  for (int64_t d : shape) {
    out->add_shape(d);
    n *= d;
  }
  out->set_dtype(dtype);
  std::string* bytes = out->mutable_data();
  if (dtype == v1::FLOAT32) {
    bytes->assign(reinterpret_cast<const char*>(data), n * sizeof(float));
    return;
  }
  bytes->resize(static_cast<size_t>(n) * 2);
  char* dst = bytes->data();
  const bool bf16 = dtype == v1::BFLOAT16;
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t bits =
        bf16 ? FloatToBFloat16(data[i]) : FloatToHalf(data[i]);
    std::memcpy(dst + 2 * i, &bits, sizeof(bits));
  }
}

}  // namespace attn::server
