// Conversion between the wire Tensor (raw little-endian bytes + shape +
// dtype, proto/attn/v1/attention.proto) and fp32 buffers.
//
//   std::vector<float> q;
//   absl::Status s = DecodeFloatTensor(request.query(), "query",
//                                      NonFinitePolicy::kReject, &q);
//   EncodeFloatTensor(out.data(), {B, Sq, D}, v1::BFLOAT16,
//   response.mutable_output());
//
// Every error is INVALID_ARGUMENT and names the tensor (`name`), the expected
// and the actual value. Free functions, no state: thread-safe.
#ifndef ATTNSERVE_SERVER_API_TENSOR_CODEC_H_
#define ATTNSERVE_SERVER_API_TENSOR_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "attn/v1/attention.pb.h"
#include "common/float16.h"

namespace attn::server {

// Bytes per element of `dtype`: 4, 2, 2, 1; 0 for DATA_TYPE_UNSPECIFIED and
// values outside the enum.
int64_t DataTypeSize(v1::DataType dtype);

// "FLOAT32", "BFLOAT16", ... or "DataType(17)" for unknown values.
std::string DataTypeName(int dtype);

// What to do with non-finite values while decoding floats.
enum class NonFinitePolicy {
  // NaN, +Inf and -Inf are INVALID_ARGUMENT (inputs).
  kReject,
  // -Inf is allowed (an additive mask uses it to mask out); NaN and +Inf are
  // INVALID_ARGUMENT.
  kAllowNegativeInfinity,
};

// Product of `shape`. Errors: INVALID_ARGUMENT for a negative dimension or
// a product that overflows int64 (message names `name`).
absl::StatusOr<int64_t> NumElements(const v1::Tensor& tensor,
                                    absl::string_view name);

// Decodes a FLOAT32/BFLOAT16/FLOAT16 tensor into fp32 (row-major). Checks the
// dtype, the shape (see NumElements), that data holds exactly
// prod(shape) * itemsize bytes, and finiteness per `policy` (the message
// names the flat index of the first bad value).
// REQUIRES: out != nullptr. On error *out is unspecified.
absl::Status DecodeFloatTensor(const v1::Tensor& tensor, absl::string_view name,
                               NonFinitePolicy policy, std::vector<float>* out);

// Decodes a BOOL tensor (one byte per element, nonzero = true) into 0/1
// bytes. Same shape and byte-length checks as DecodeFloatTensor.
// REQUIRES: out != nullptr.
absl::Status DecodeBoolTensor(const v1::Tensor& tensor, absl::string_view name,
                              std::vector<uint8_t>* out);

// Writes `data` (prod(shape) fp32 values) into `out` as `dtype`: FLOAT32
// verbatim, BFLOAT16 and FLOAT16 rounded to nearest even (overflow -> Inf,
// NaN stays NaN). REQUIRES: dtype is FLOAT32, BFLOAT16 or FLOAT16;
// out != nullptr.
void EncodeFloatTensor(const float* data, absl::Span<const int64_t> shape,
                       v1::DataType dtype, v1::Tensor* out);

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_API_TENSOR_CODEC_H_
