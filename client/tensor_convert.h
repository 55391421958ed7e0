// Conversions between float arrays and attn.v1.Tensor (raw little-endian
// bytes + shape + dtype), including float <-> bfloat16 / float16.
//
// Usage:
//   std::vector<float> x(2 * 8 * 256);
//   absl::StatusOr<attn::v1::Tensor> t =
//       attn::MakeTensor(x, {2, 8, 256}, attn::v1::BFLOAT16);
//   absl::StatusOr<std::vector<float>> back = attn::TensorToFloats(*t);
//
// All functions are pure and thread-safe.
#ifndef ATTNSERVE_CLIENT_TENSOR_CONVERT_H_
#define ATTNSERVE_CLIENT_TENSOR_CONVERT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attn/v1/attention.pb.h"
#include "common/float16.h"

namespace attn {

// Bytes of one element of `dtype`; 0 for DATA_TYPE_UNSPECIFIED or unknown.
int64_t DataTypeSize(v1::DataType dtype);

// Product of the dimensions. Errors: INVALID_ARGUMENT for a negative
// dimension or an overflowing product.
absl::StatusOr<int64_t> NumElements(absl::Span<const int64_t> shape);

// Encodes `values` (row-major) as a tensor of `shape` and `dtype` (FLOAT32,
// BFLOAT16 or FLOAT16). Errors: INVALID_ARGUMENT when values.size() is not
// the product of shape, or for an unsupported dtype.
absl::StatusOr<v1::Tensor> MakeTensor(absl::Span<const float> values,
                                      absl::Span<const int64_t> shape,
                                      v1::DataType dtype = v1::FLOAT32);

// Encodes a boolean mask (one byte per element, nonzero = true = masked).
// Errors: INVALID_ARGUMENT when values.size() is not the product of shape.
absl::StatusOr<v1::Tensor> MakeBoolTensor(absl::Span<const uint8_t> values,
                                          absl::Span<const int64_t> shape);

// Decodes a FLOAT32, BFLOAT16, FLOAT16 or BOOL (0/1) tensor to floats.
// Errors: INVALID_ARGUMENT for another dtype or when data is not
// prod(shape) * sizeof(dtype) bytes.
absl::StatusOr<std::vector<float>> TensorToFloats(const v1::Tensor& tensor);

}  // namespace attn

#endif  // ATTNSERVE_CLIENT_TENSOR_CONVERT_H_
