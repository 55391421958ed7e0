// Pieces shared by the tiled attention core (flash_core.cc) and its units,
// one file per instruction set: flash_common.cc (portable scalar code),
// flash_f32.cc (AVX-512 fp32), flash_bf16.cc (AVX512-BF16 dot products),
// flash_amx.cc (AMX-BF16 tiles), flash_hwy.cc (fp32 on any vector ISA,
// Google Highway).
//
// A unit computes one block of up to BQ query rows of one head h of one
// sequence: it writes those rows of the sequence's context, normalised, and
// (when write_mask) their row_masked flags. g = h / (H / KVH) is the kv head.
// Units running at once on different threads share no ThreadTiles and no
// output rows. Internal: not part of the public API.
#ifndef ATTNSERVE_KERNELS_INTERNAL_FLASH_TILES_H_
#define ATTNSERVE_KERNELS_INTERNAL_FLASH_TILES_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "kernels/internal/flash_core.h"

namespace attn::kernels::internal::flash {

constexpr int64_t BQ = FlashCore::kBlockQ;
constexpr int64_t BK = FlashCore::kBlockK;
constexpr int kRowsPerKernel = 6;  // 6 rows x 4 vectors = 24 accumulators
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Keys j < RowLimit(s, i) may be attended by query row i.
inline int64_t RowLimit(const FlashSequence& s, int64_t i) {
  int64_t limit = s.key_limit;
  if (s.causal) limit = std::min(limit, i + (s.kv_len - s.q_len) + 1);
  return std::max<int64_t>(limit, 0);
}

// Round-to-nearest-even fp32 -> bf16 (inputs are finite).
inline uint16_t ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Per-thread tile scratch.
struct ThreadTiles {
  float* s;          // [BQ][BK] scores / probabilities (fp32); transposed
                     // [BK][BQ] on the fp32 and AMX paths
  uint16_t* p16;     // [BQ][BK] probabilities (bf16); transposed key pairs
                     // [BK/2][BQ][2] on the AMX path
  uint16_t* q16;     // [BQ][hdp] query rows (bf16, vdpbf16ps path)
  float* m;          // [BQ] running max
  float* l;          // [BQ] running sum
  float* alpha;      // [BQ] rescale of this step
  float* qt;         // [hd][BQ] query rows, transposed (fp32 path); as
                     // bf16 dimension pairs [hd/2][BQ][2] (AMX path)
  int64_t* limit;    // [BQ] row limits
  int32_t* limit32;  // [BQ] row limits as int32 (fp32 and AMX paths)
  float* pv;         // unnormalised output: [BQ][hd] rows (fp32 path),
                     // [hd][BQ] transposed (AMX path)
};

// Starts the column state of a key-major unit over query rows i0 .. i0 +
// nq - 1 (nqv vectors of 16): running max -inf, sum 0, row limits in
// t.limit and t.limit32. Pad lanes (r >= nq) get limit 0; they see zero
// queries and their results are never stored. Returns {min, max} of the
// real rows' limits.
inline std::pair<int64_t, int64_t> StartColumns(const FlashSequence& s,
                                                int64_t i0, int64_t nq, int nqv,
                                                const ThreadTiles& t) {
  int64_t min_limit = s.kv_len;
  int64_t max_limit = 0;
  for (int64_t r = 0; r < 16 * nqv; ++r) {
    t.m[r] = kNegInf;
    t.l[r] = 0.0f;
    t.limit[r] = r < nq ? RowLimit(s, i0 + r) : 0;
    t.limit32[r] = static_cast<int32_t>(t.limit[r]);
    if (r >= nq) continue;
    max_limit = std::max(max_limit, t.limit[r]);
    min_limit = std::min(min_limit, t.limit[r]);
  }
  return {min_limit, max_limit};
}

// --- flash_common.cc (any CPU) ---

// Adds the explicit mask and the row limit to one score tile row (columns
// j0 .. j0 + width - 1): masked entries become -inf.
void MaskTileRow(const FlashSequence& s, int64_t i, int64_t j0, int64_t limit,
                 int64_t width, float* row);

// Applies the sequence's explicit mask to the transposed score tile
// t.s[nk][BQ] of keys j0 .. j0 + nk - 1, for the first nq query rows and
// keys below their limit (t.limit, StartColumns).
void MaskColumnsExplicit(const FlashSequence& s, int64_t i0, int64_t nq,
                         int64_t j0, int64_t nk, const ThreadTiles& t);

// Whether the fp32 units (AVX-512 and Highway) pack the keys and values of
// `s` (long sequences: every query block re-reads them, and strided rows
// defeat the prefetchers).
bool PackF32(const FlashSequence& s);

// Copies key block kb of kv head g into dense [BK][hd] rows of K and of V.
void PackF32Block(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                  float* k_out, float* v_out);

// One query row at a time, two passes over its keys, in fp32
// (ATTN_KERNEL_ISA=scalar, and CPUs without a vector unit). row_buf holds
// kv_len floats.
void ScalarUnit(const FlashSequence& s, int64_t h, int64_t g, int64_t i0,
                int64_t nq, int64_t hd, int64_t ctx_stride, float* row_buf,
                bool write_mask);

// --- flash_f32.cc (AVX-512) ---

// k and v point at key 0 of kv head g, rows kv_stride floats apart (the
// projection output, or a dense packed copy).
void F32Unit(const FlashSequence& s, const float* k, const float* v,
             int64_t kv_stride, int64_t h, int64_t i0, int64_t nq, int64_t hd,
             int64_t ctx_stride, const ThreadTiles& t, bool write_mask);

// --- flash_bf16.cc (AVX512-BF16) ---

// Packs key block kb of kv head g: K as dimension pairs [hdp/2][BK][2], V as
// key pairs [BK/2][hd][2], bf16; keys past kv_len (to a whole 32-key chunk)
// are zero.
void PackBf16Block(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                   uint16_t* k_out, uint16_t* v_out);

// packed_k and packed_v: the sequence's PackBf16Block output.
void Bf16Unit(const FlashSequence& s, const uint16_t* packed_k,
              const uint16_t* packed_v, int64_t h, int64_t g, int64_t i0,
              int64_t nq, int64_t hd, int64_t ctx_stride, const ThreadTiles& t,
              bool write_mask);

// --- flash_amx.cc (AMX-BF16) ---

// Asks the kernel once per process for permission to use the AMX tile data
// state (Linux >= 5.16). Returns false when it is refused.
bool RequestAmxPermission();

// Loads / releases this thread's tile configuration around AmxUnit calls.
void AmxConfigure();
void AmxRelease();

// Packs key block kb of kv head g for AmxUnit: K as bf16 rows [BK][hd], V
// transposed as bf16 rows [hd][BK]; keys past kv_len (to a whole 32-key
// chunk) are zero. REQUIRES: hd % 32 == 0.
void PackAmxBlock(const FlashSequence& s, int64_t g, int64_t kb, int64_t hd,
                  uint16_t* k_out, uint16_t* v_out);

// As F32Unit (key-major) with bf16 tile products; packed_k and packed_v: the
// sequence's PackAmxBlock output. REQUIRES: hd % 32 == 0, AmxConfigure().
void AmxUnit(const FlashSequence& s, const uint16_t* packed_k,
             const uint16_t* packed_v, int64_t h, int64_t g, int64_t i0,
             int64_t nq, int64_t hd, int64_t ctx_stride, const ThreadTiles& t,
             bool write_mask);

}  // namespace attn::kernels::internal::flash

#endif  // ATTNSERVE_KERNELS_INTERNAL_FLASH_TILES_H_
