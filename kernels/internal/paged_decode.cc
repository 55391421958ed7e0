#include "kernels/internal/paged_decode.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/internal/flash_hwy.h"
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

// Element offset of kv head g's part of block `block`, in either half:
// K [head_dim][block_tokens] (transposed), V [block_tokens][head_dim].
inline int64_t HeadBlock(const KvPoolLayout& l, int32_t block, int64_t g) {
  return block * l.block_elements() + g * l.block_tokens * l.head_dim;
}

// A bf16 or fp32 pool element as fp32.
template <typename T>
float Widen(T x) {
  if constexpr (sizeof(T) == 2) {
    return FromBf16(x);
  } else {
    return x;
  }
}

// Token `slot`'s K (strided) and V (a row) of one kv head's block, widened
// to fp32 into k and v.
template <typename T>
void ReadToken(const KvPool& pool, int64_t at, int64_t slot, float* k,
               float* v) {
  const KvPoolLayout& l = pool.layout;
  const T* kt = static_cast<const T*>(pool.k_base) + at + slot;
  const T* vr = static_cast<const T*>(pool.v_base) + at + slot * l.head_dim;
  for (int64_t e = 0; e < l.head_dim; ++e) {
    k[e] = Widen(kt[e * l.block_tokens]);
    v[e] = Widen(vr[e]);
  }
}

// Writes token `slot`'s K (strided) and V of one kv head's block.
template <typename T>
void WriteToken(const KvPool& pool, int64_t at, int64_t slot, const float* k,
                const float* v) {
  const KvPoolLayout& l = pool.layout;
  T* kt = static_cast<T*>(pool.k_base) + at + slot;
  T* vr = static_cast<T*>(pool.v_base) + at + slot * l.head_dim;
  for (int64_t e = 0; e < l.head_dim; ++e) {
    if constexpr (sizeof(T) == 2) {
      kt[e * l.block_tokens] = flash::ToBf16(k[e]);
      vr[e] = flash::ToBf16(v[e]);
    } else {
      kt[e * l.block_tokens] = k[e];
      vr[e] = v[e];
    }
  }
}

// The scalar span: one key at a time, the same contract as the Highway one.
void ScalarSpan(const KvPool& pool, const DecodeSpan& sp,
                const DecodePartial& out) {
  const KvPoolLayout& l = pool.layout;
  const int64_t hd = l.head_dim, bt = l.block_tokens;
  const int64_t rows = sp.num_kv * sp.group;
  float* k = out.scratch;  // scratch holds >= 2 * hd floats (see below)
  float* v = out.scratch + hd;
  std::fill(out.m, out.m + rows, -std::numeric_limits<float>::infinity());
  std::fill(out.l, out.l + rows, 0.0f);
  std::fill(out.acc, out.acc + rows * hd, 0.0f);
  for (int64_t j = sp.first; j < sp.last; ++j) {
    for (int64_t g = 0; g < sp.num_kv; ++g) {
      const int64_t at = HeadBlock(l, sp.block_table[j / bt], sp.kv_head + g);
      if (l.dtype == KvPoolLayout::Dtype::kBf16) {
        ReadToken<uint16_t>(pool, at, j % bt, k, v);
      } else {
        ReadToken<float>(pool, at, j % bt, k, v);
      }
      for (int64_t h = g * sp.group; h < (g + 1) * sp.group; ++h) {
        const float* qh = sp.q + h * hd;
        float dot = 0.0f;
        for (int64_t d = 0; d < hd; ++d) dot += qh[d] * k[d];
        float* a = out.acc + h * hd;
        if (dot > out.m[h]) {
          const float c = std::exp(out.m[h] - dot);  // exp(-inf) = 0 at first
          out.l[h] *= c;
          for (int64_t d = 0; d < hd; ++d) a[d] *= c;
          out.m[h] = dot;
        }
        const float p = std::exp(dot - out.m[h]);
        out.l[h] += p;
        for (int64_t d = 0; d < hd; ++d) a[d] += p * v[d];
      }
    }
  }
}

// One span of work: token t's kv heads g .. g + nkv - 1 over keys
// [first, last). part < 0: the only span of its (token, kv heads), normalised
// straight into ctx; else its index in the partial-results buffer.
struct Unit {
  int64_t t;
  int64_t g;
  int64_t nkv;
  int64_t first;
  int64_t last;
  int64_t part;
};

// A (token, kv head) pair split into `count` spans, partials part0 ... .
struct Merge {
  int64_t t;
  int64_t g;
  int64_t part0;
  int64_t count;
};

}  // namespace

void PagedDecode(const float* qkv, absl::Span<const PagedSequence> seqs,
                 const KvPool& pool, int64_t num_heads, const Rope& rope,
                 int64_t window, DecodeSpanFn span, float* ctx) {
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
        const int64_t at = HeadBlock(l, s.block_table[pos / bt], g);
        const float* k = row + q_width + g * hd;
        if (rope.enabled()) {
          rope.RotateTo(cs.data(), k, krot.data());
          k = krot.data();
        }
        const float* v = row + q_width + kv_width + g * hd;
        if (bf16) {
          WriteToken<uint16_t>(pool, at, pos % bt, k, v);
        } else {
          WriteToken<float>(pool, at, pos % bt, k, v);
        }
      }
    }
  }

  // 2. Attention, in spans (see the header). With enough tokens for every
  // thread, a span covers all kv heads of its token (each block is then
  // read as two contiguous runs, its K and its V half); with fewer, one kv
  // head, and long key ranges are split.
  const int threads = std::max(1, omp_get_max_threads());
  const int64_t pairs = total * kvh;
  const int64_t want_splits =
      pairs >= 4 * threads ? 1 : (4 * threads + pairs - 1) / pairs;
  const int64_t width = total >= 4 * threads ? kvh : 1;  // kv heads per span
  std::vector<Unit> units;
  std::vector<Merge> merges;
  units.reserve(static_cast<size_t>(pairs));
  int64_t parts = 0;
  for (int64_t t = 0; t < total; ++t) {
    const size_t si =
        std::upper_bound(first.begin(), first.end(), t) - first.begin() - 1;
    const int64_t pos = seqs[si].start_position + (t - first[si]);
    const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
    const int64_t n = pos + 1 - lo;
    int64_t splits = std::clamp<int64_t>(n / kMinSpanKeys, 1, want_splits);
    // Whole blocks per span (the last one takes the rest).
    const int64_t len = ((n + splits - 1) / splits + bt - 1) / bt * bt;
    splits = (n + len - 1) / len;
    for (int64_t g = 0; g < kvh; g += width) {
      if (splits > 1) merges.push_back({t, g, parts, splits});
      for (int64_t c = 0; c < splits; ++c) {
        units.push_back({t, g, width, lo + c * len,
                         std::min(pos + 1, lo + (c + 1) * len),
                         splits > 1 ? parts++ : -1});
      }
    }
  }
  // m, l, acc of one split part (one kv head's group); `own` holds a whole
  // span's (width kv heads).
  const int64_t part_floats = group * (hd + 2);
  const int64_t own_floats = width * part_floats;
  std::vector<float> partials(static_cast<size_t>(parts * part_floats));
  const DecodeSpanFn run = span != nullptr ? span : &ScalarSpan;
  const int64_t scratch_floats =
      std::max(DecodeScratchFloats(width * group, l), 2 * hd);
#pragma omp parallel
  {
    std::vector<float> own(static_cast<size_t>(own_floats));
    std::vector<float> scratch(static_cast<size_t>(scratch_floats));
    std::vector<float> cs(static_cast<size_t>(2 * rope.half()));
    std::vector<float> qrot(
        rope.enabled() ? static_cast<size_t>(width * group * hd) : 0);
#pragma omp for schedule(dynamic, 1)
    for (size_t u = 0; u < units.size(); ++u) {
      const Unit& w = units[u];
      const size_t si =
          std::upper_bound(first.begin(), first.end(), w.t) - first.begin() - 1;
      const PagedSequence& s = seqs[si];
      const float* q = qkv + w.t * qkv_width + w.g * group * hd;
      const int64_t rows = w.nkv * group;  // query heads of the span
      if (rope.enabled()) {
        rope.Angles(s.start_position + (w.t - first[si]), cs.data());
        for (int64_t h = 0; h < rows; ++h) {
          rope.RotateTo(cs.data(), q + h * hd, qrot.data() + h * hd);
        }
        q = qrot.data();
      }
      float* p =
          w.part < 0 ? own.data() : partials.data() + w.part * part_floats;
      const DecodePartial out{p, p + rows, p + 2 * rows, scratch.data()};
      run(pool, {q, group, s.block_table, w.g, w.nkv, w.first, w.last}, out);
      if (w.part < 0) {
        float* o = ctx + w.t * q_width + w.g * group * hd;
        for (int64_t h = 0; h < rows; ++h) {
          const float inv = 1.0f / out.l[h];
          for (int64_t d = 0; d < hd; ++d)
            o[h * hd + d] = out.acc[h * hd + d] * inv;
        }
      }
    }
    // Merge split pairs: rescale each part to the common max.
#pragma omp for schedule(static)
    for (size_t i = 0; i < merges.size(); ++i) {
      const Merge& mg = merges[i];
      float* o = ctx + mg.t * q_width + mg.g * group * hd;
      for (int64_t h = 0; h < group; ++h) {
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < mg.count; ++c) {
          mx = std::max(mx, partials[(mg.part0 + c) * part_floats + h]);
        }
        float sum = 0.0f;
        std::fill(o + h * hd, o + (h + 1) * hd, 0.0f);
        for (int64_t c = 0; c < mg.count; ++c) {
          const float* p = partials.data() + (mg.part0 + c) * part_floats;
          const float f = std::exp(p[h] - mx);
          sum += p[group + h] * f;
          const float* a = p + 2 * group + h * hd;
          for (int64_t d = 0; d < hd; ++d) o[h * hd + d] += a[d] * f;
        }
        const float inv = 1.0f / sum;
        for (int64_t d = 0; d < hd; ++d) o[h * hd + d] *= inv;
      }
    }
  }
}

DecodeSpanFn DecodeSpanFor(const CoreChoice& core) {
  switch (core.isa) {
    case CoreIsa::kScalar:
      return nullptr;
    case CoreIsa::kHwy:
      return HwyDecodeSpan(core.hwy->target);
    default:
      return BestHwyDecodeSpan();
  }
}

}  // namespace attn::kernels::internal
