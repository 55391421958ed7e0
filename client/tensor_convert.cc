#include "client/tensor_convert.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attn {
namespace {

static_assert(ABSL_IS_LITTLE_ENDIAN,
              "Tensor bytes are little-endian; big-endian hosts need swaps");

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
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

absl::StatusOr<int64_t> NumElements(absl::Span<const int64_t> shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has a negative dim"));
    }
    if (dim != 0 && count > std::numeric_limits<int64_t>::max() / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " is too large"));
    }
    count *= dim;
  }
  return count;
}

absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const float> values,
                                      absl::Span<const int64_t> shape,
                                      v1::DataType dtype) {
  absl::StatusOr<int64_t> count = NumElements(shape);
  if (!count.ok()) return count.status();
  if (*count != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " holds ", *count,
                     " elements but ", values.size(), " values were given"));
  }
  v1::Tensor tensor;
  tensor.mutable_shape()->Add(shape.begin(), shape.end());
  tensor.set_dtype(dtype);
  std::string* data = tensor.mutable_data();
  switch (dtype) {
    case v1::FLOAT32:
      data->assign(reinterpret_cast<const char*>(values.data()),
                   values.size() * sizeof(float));
      break;
    case v1::BFLOAT16:
    case v1::FLOAT16: {
      data->resize(values.size() * sizeof(uint16_t));
      char* out = data->data();
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t bits = dtype == v1::BFLOAT16 ? FloatToBFloat16(values[i])
                                                    : FloatToHalf(values[i]);
        std::memcpy(out + i * sizeof(bits), &bits, sizeof(bits));
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot encode floats as dtype ", v1::DataType_Name(dtype),
          "; expected FLOAT32, BFLOAT16 or FLOAT16"));
  }
  return tensor;
}

absl::StatusOr<v1::Tensor> MakeBoolTensor(absl::Span<const uint8_t> values,
                                          absl::Span<const int64_t> shape) {
  absl::StatusOr<int64_t> count = NumElements(shape);
  if (!count.ok()) return count.status();
  if (*count != static_cast<int64_t>(values.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " holds ", *count,
                     " elements but ", values.size(), " values were given"));
  }
  v1::Tensor tensor;
  tensor.mutable_shape()->Add(shape.begin(), shape.end());
  tensor.set_dtype(v1::BOOL);
  tensor.mutable_data()->resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    (*tensor.mutable_data())[i] = values[i] ? 1 : 0;
  }
  return tensor;
}

absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor) {
  const int64_t element_size = DataTypeSize(tensor.dtype());
  if (element_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor has unsupported dtype ", v1::DataType_Name(tensor.dtype())));
  }
  const std::vector<int64_t> shape(tensor.shape().begin(),
                                   tensor.shape().end());
  absl::StatusOr<int64_t> count = NumElements(shape);
  if (!count.ok()) return count.status();
  const std::string& data = tensor.data();
  if (static_cast<int64_t>(data.size()) != *count * element_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor of shape ", ShapeString(shape), " and dtype ",
        v1::DataType_Name(tensor.dtype()), " needs ", *count * element_size,
        " bytes of data, got ", data.size()));
  }
  std::vector<float> values(static_cast<size_t>(*count));
  const char* in = data.data();
  for (size_t i = 0; i < values.size(); ++i) {
    switch (tensor.dtype()) {
      case v1::FLOAT32:
        std::memcpy(&values[i], in + i * 4, 4);
        break;
      case v1::BFLOAT16:
      case v1::FLOAT16: {
        uint16_t bits;
        std::memcpy(&bits, in + i * 2, 2);
        values[i] = tensor.dtype() == v1::BFLOAT16 ? BFloat16ToFloat(bits)
                                                   : HalfToFloat(bits);
        break;
      }
      default:  // BOOL
        values[i] = in[i] != 0 ? 1.0f : 0.0f;
        break;
    }
  }
  return values;
}

}  // namespace attn
