#include "kernels/internal/masking.h"

#include <algorithm>
#include <limits>

namespace attn::kernels::internal {

bool ApplyRowMask(const MaskSpec& spec, int64_t b, int64_t i, int64_t q_len,
                  int64_t kv_len, float* scores, int64_t num_rows,
                  int64_t row_stride) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // Keys j < limit may be attended; keys j >= limit are masked.
  int64_t limit = kv_len;
  if (spec.key_lengths != nullptr) {
    limit = std::min<int64_t>(limit, spec.key_lengths[b]);
  }
  if (spec.causal) limit = std::min(limit, i + (kv_len - q_len) + 1);
  limit = std::max<int64_t>(limit, 0);

  const int64_t mask_offset = ((spec.per_batch ? b * q_len : 0) + i) * kv_len;
  bool fully_masked = limit == 0;
  if (!fully_masked && spec.kind == MaskKind::kAdditive) {
    const float* m = static_cast<const float*>(spec.mask) + mask_offset;
    fully_masked =
        std::all_of(m, m + limit, [](float x) { return x == kNegInf; });
  } else if (!fully_masked && spec.kind == MaskKind::kBoolean) {
    const uint8_t* m = static_cast<const uint8_t*>(spec.mask) + mask_offset;
    fully_masked = std::all_of(m, m + limit, [](uint8_t x) { return x != 0; });
  }
  if (fully_masked) return true;

  for (int64_t r = 0; r < num_rows; ++r) {
    float* s = scores + r * row_stride;
    if (spec.kind == MaskKind::kAdditive) {
      const float* m = static_cast<const float*>(spec.mask) + mask_offset;
      for (int64_t j = 0; j < limit; ++j) s[j] += m[j];
    } else if (spec.kind == MaskKind::kBoolean) {
      const uint8_t* m = static_cast<const uint8_t*>(spec.mask) + mask_offset;
      for (int64_t j = 0; j < limit; ++j) s[j] = m[j] != 0 ? kNegInf : s[j];
    }
    std::fill(s + limit, s + kv_len, kNegInf);
  }
  return false;
}

}  // namespace attn::kernels::internal
