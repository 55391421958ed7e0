// Scalar conversions between fp32 and the 16-bit float formats that travel
// on the wire and in checkpoints (IEEE-754 binary16 "half" and bfloat16).
// Shared by the checkpoint reader, the server's tensor codec and the client
// library. Pure functions: thread-safe.
#ifndef ATTNSERVE_COMMON_FLOAT16_H_
#define ATTNSERVE_COMMON_FLOAT16_H_

#include <cstdint>

namespace attn {

// Exact conversions of 16-bit floats to fp32 (subnormals, infinities and NaN
// payloads kept).
float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);

// Round-to-nearest-even conversions of fp32 to 16-bit floats: overflow gives
// ±infinity, tiny values become subnormals or zero, NaN stays a quiet NaN.
uint16_t FloatToHalf(float value);
uint16_t FloatToBFloat16(float value);

}  // namespace attn

#endif  // ATTNSERVE_COMMON_FLOAT16_H_
