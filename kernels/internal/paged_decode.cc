#include "kernels/internal/paged_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/internal/flash_tiles.h"
#include "kernels/internal/rope.h"

namespace attn::kernels::internal {
namespace {

inline float FromBf16(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Row `slot` of kv head `g` in block `block` (elements).
inline int64_t At(const KvPoolLayout& l, int32_t block, int64_t g,
                  int64_t slot) {
  return block * l.block_elements() + (g * l.block_tokens + slot) * l.head_dim;
}

// Widens one head_dim row of K or V to fp32 (copies only for bf16).
inline const float* Row(const KvPool& pool, bool k, int64_t at, float* tmp) {
  void* base = k ? pool.k_base : pool.v_base;
  if (pool.layout.dtype == KvPoolLayout::Dtype::kF32) {
    return static_cast<const float*>(base) + at;
  }
  const uint16_t* src = static_cast<const uint16_t*>(base) + at;
  for (int64_t d = 0; d < pool.layout.head_dim; ++d) tmp[d] = FromBf16(src[d]);
  return tmp;
}

}  // namespace

void PagedDecode(const float* qkv, absl::Span<const PagedSequence> seqs,
                 const KvPool& pool, int64_t num_heads, const Rope& rope,
                 int64_t window, float* ctx) {
  const KvPoolLayout& l = pool.layout;
  const int64_t hd = l.head_dim, kvh = l.num_kv_heads, bt = l.block_tokens;
  const int64_t group = num_heads / kvh;
  const int64_t q_width = num_heads * hd, kv_width = kvh * hd;
  const int64_t qkv_width = q_width + 2 * kv_width;
  const bool bf16 = l.dtype == KvPoolLayout::Dtype::kBf16;
  std::vector<int64_t> first(seqs.size() + 1, 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    first[i + 1] = first[i] + seqs[i].new_tokens;
  }
  const int64_t total = first.back();

  // 1. K (rotated at its absolute position) and V of the new tokens into
  // their slots.
#pragma omp parallel
  {
    std::vector<float> cs(static_cast<size_t>(2 * rope.half()));
    std::vector<float> krot(static_cast<size_t>(hd));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < total; ++t) {
      const size_t si =
          std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
      const PagedSequence& s = seqs[si];
      const int64_t pos = s.start_position + (t - first[si]);
      const float* row = qkv + t * qkv_width;
      if (rope.enabled()) rope.Angles(pos, cs.data());
      for (int64_t g = 0; g < kvh; ++g) {
        const int64_t at = At(l, s.block_table[pos / bt], g, pos % bt);
        const float* k = row + q_width + g * hd;
        if (rope.enabled()) {
          rope.RotateTo(cs.data(), k, krot.data());
          k = krot.data();
        }
        const float* v = row + q_width + kv_width + g * hd;
        if (bf16) {
          uint16_t* kd = static_cast<uint16_t*>(pool.k_base) + at;
          uint16_t* vd = static_cast<uint16_t*>(pool.v_base) + at;
          for (int64_t d = 0; d < hd; ++d) {
            kd[d] = flash::ToBf16(k[d]);
            vd[d] = flash::ToBf16(v[d]);
          }
        } else {
          std::memcpy(static_cast<float*>(pool.k_base) + at, k,
                      sizeof(float) * hd);
          std::memcpy(static_cast<float*>(pool.v_base) + at, v,
                      sizeof(float) * hd);
        }
      }
    }
  }

  // 2. Attention: one unit per (new token, kv head), all its query heads.
  const int64_t units = total * kvh;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(group * hd));
    std::vector<float> m(static_cast<size_t>(group)), sum(m.size());
    std::vector<float> score(m.size());
    std::vector<float> ktmp(static_cast<size_t>(hd)), vtmp(ktmp.size());
    std::vector<float> cs(static_cast<size_t>(2 * rope.half()));
    std::vector<float> qrot(rope.enabled() ? acc.size() : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int64_t t = u / kvh, g = u % kvh;
      const size_t si =
          std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
      const PagedSequence& s = seqs[si];
      const int64_t pos = s.start_position + (t - first[si]);
      const float* q = qkv + t * qkv_width + g * group * hd;
      if (rope.enabled()) {
        rope.Angles(pos, cs.data());
        for (int64_t h = 0; h < group; ++h) {
          rope.RotateTo(cs.data(), q + h * hd, qrot.data() + h * hd);
        }
        q = qrot.data();
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
      std::fill(sum.begin(), sum.end(), 0.0f);
      const int64_t first_key =
          window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      for (int64_t j = first_key; j <= pos; ++j) {
        const int64_t at = At(l, s.block_table[j / bt], g, j % bt);
        const float* k = Row(pool, true, at, ktmp.data());
        const float* v = Row(pool, false, at, vtmp.data());
        for (int64_t h = 0; h < group; ++h) {
          const float* qh = q + h * hd;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qh[d] * k[d];
          float* a = acc.data() + h * hd;
          if (dot > m[h]) {
            const float c = std::exp(m[h] - dot);  // exp(-inf) = 0 at first
            sum[h] *= c;
            for (int64_t d = 0; d < hd; ++d) a[d] *= c;
            m[h] = dot;
          }
          const float p = std::exp(dot - m[h]);
          sum[h] += p;
          for (int64_t d = 0; d < hd; ++d) a[d] += p * v[d];
        }
      }
      float* out = ctx + t * q_width + g * group * hd;
      for (int64_t h = 0; h < group; ++h) {
        const float inv = 1.0f / sum[h];
        for (int64_t d = 0; d < hd; ++d)
          out[h * hd + d] = acc[h * hd + d] * inv;
      }
    }
  }
}

}  // namespace attn::kernels::internal
