#include "common/float16.h"

#include <cmath>
#include <cstring>

namespace attn {
namespace {

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

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) {  // inf or NaN (payload kept)
    return BitsFloat(sign | 0x7f800000u | mant << 13);
  }
  if (exp == 0) {
    if (mant == 0) return BitsFloat(sign);  // +-0
    // Subnormal: mant * 2^-24. Normalise for fp32.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    mant &= 0x3ff;
    return BitsFloat(sign | static_cast<uint32_t>(e + 127) << 23 | mant << 13);
  }
  return BitsFloat(sign | (exp + 127 - 15) << 23 | mant << 13);
}

float BFloat16ToFloat(uint16_t bits) { return BitsFloat(uint32_t{bits} << 16); }

uint16_t FloatToHalf(float value) {
  uint32_t x = FloatBits(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // inf or NaN
    return sign | (x > 0x7f800000u ? 0x7e00 | ((x >> 13) & 0x3ff) : 0x7c00);
  }
  if (x >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65536: inf
  if (x < 0x38800000u) {                       // below 2^-14: subnormal half
    // |value| * 2^24 is exact; nearbyint rounds half to even.
    const float scaled = std::fabs(value) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  x -= 112u << 23;  // rebias the exponent from 127 to 15
  x += 0xfffu + ((x >> 13) & 1u);
  return sign | static_cast<uint16_t>(x >> 13);
}

uint16_t FloatToBFloat16(float value) {
  const uint32_t x = FloatBits(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  }
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace attn
