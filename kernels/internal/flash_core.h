// The tiled attention core with online softmax (flash-attention style): for
// every sequence, head and block of kBlockQ query rows it walks key blocks of
// kBlockK keys, keeping a running row max, row sum and the unnormalised
// output, so the Sq x Sk score matrix is never materialised (memory is linear
// in the sequence length). Causal and key-length limits skip every key block
// that is fully masked. Any number of sequences of different lengths (the
// ragged items of a dynamic batch) go through one call, parallelised with
// OpenMP over (sequence, head, query block) units, heaviest first.
//
// Numerics: fp32 layers run a core of fp32 FMAs: the hand-tuned AVX-512
// unit on AVX-512 CPUs, elsewhere the Highway unit (flash_hwy.h: AVX2+FMA,
// NEON, ...). bf16 layers run, by default, the AMX core when the CPU has
// AMX-BF16, the OS grants the tile state (arch_prctl, once per process) and
// head_dim % 32 == 0: Q, K, V and the softmax probabilities are rounded to
// bf16, and K.Q^T and V^T.P^T are AMX tile products (tdpbf16ps, fp32
// accumulation, 32 x 32 blocks) computed key-major like the fp32 core, so
// the online softmax runs down the columns of the transposed 64 x 64 score
// tile. Otherwise bf16 layers use the fp32 core (on CPUs without AVX-512
// their projections are bf16 emulated on fp32 GEMMs, Linear). The vdpbf16ps
// core (AVX512-BF16 CPUs, bf16 layers only) has the same numerics; by
// default it runs the sequences long enough for it to beat the fp32 unit,
// a key length measured per CPU and head shape when the core is built
// (bf16_calibration.h), and ATTN_KERNEL_ISA=avx512_bf16 forces it for all.
// ATTN_KERNEL_ISA (kernels/kernel_isa.h) forces any path, including the
// portable scalar one (kernel_isa.cc chooses). Max, exp and sums are fp32
// always. Internal: not part of the public API.
//
// Thread-safety: Forward() is const and may be called concurrently (the
// scratch pool is internally synchronized). Each call runs an OpenMP team of
// omp_get_max_threads() of the calling thread.
#ifndef ATTNSERVE_KERNELS_INTERNAL_FLASH_CORE_H_
#define ATTNSERVE_KERNELS_INTERNAL_FLASH_CORE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/attention.h"
#include "kernels/internal/kernel_isa.h"
#include "kernels/internal/scratch_arena.h"

namespace attn::kernels::internal {

// One sequence (one batch row of one request) for the core.
struct FlashSequence {
  const float* q = nullptr;  // token 0, head 0 (already scaled)
  const float* k = nullptr;  // token 0, kv head 0
  const float* v = nullptr;  // token 0, kv head 0
  int64_t q_stride = 0;      // floats between consecutive query tokens
  int64_t kv_stride = 0;     // floats between consecutive key/value tokens
  float* context = nullptr;  // [q_len, H * head_dim], dense rows
  int64_t q_len = 0;
  int64_t kv_len = 0;
  // Keys j >= key_limit are masked (kv_len when there are no key lengths).
  int64_t key_limit = 0;
  // Row i attends to keys j <= i + (kv_len - q_len).
  bool causal = false;
  MaskKind mask_kind = MaskKind::kNone;
  const void* mask = nullptr;     // this sequence's [q_len, kv_len] mask
  uint8_t* row_masked = nullptr;  // [q_len] out: 1 if every key is masked
};

class FlashCore {
 public:
  static constexpr int64_t kBlockQ = 64;
  static constexpr int64_t kBlockK = 64;

  // REQUIRES: all > 0, num_heads % num_kv_heads == 0. Runs ChooseCore's
  // choice (kernel_isa.h; an ATTN_KERNEL_ISA it refuses gives the default:
  // MultiHeadAttention::Create checks it first).
  // A default bf16 core on an AVX512-BF16 CPU (CoreChoice::calibrate) is
  // calibrated here (bf16_calibration.h; once per head shape and process).
  FlashCore(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            ComputeDType dtype);
  // Runs `choice` as given (calibration and tests). REQUIRES: this CPU runs
  // it, and choice.calibrate is false.
  FlashCore(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
            ComputeDType dtype, CoreChoice choice);

  // Computes the context of every sequence; rows whose keys are all masked
  // get zero context and row_masked = 1. REQUIRES: sequences valid (shapes
  // checked by the caller, key_limit in [0, kv_len]).
  absl::Status Forward(absl::Span<const FlashSequence> seqs) const;

  // "amx_bf16", "avx512_bf16", "avx512", "hwy_avx2" (or another Highway
  // target) or "scalar": the kernels this object runs.
  const char* isa() const { return choice_.name.c_str(); }
  const CoreChoice& choice() const { return choice_; }
  // isa(), and for a calibrated bf16 core how it splits sequences and what
  // was measured: "avx512_bf16 from 128 keys, avx512 below (calibrated:
  // vdpbf16ps/fp32 time 1.31@16 ...)".
  const std::string& description() const { return description_; }

 private:
  using Isa = CoreIsa;

  const int64_t num_heads_;
  const int64_t num_kv_heads_;
  const int64_t head_dim_;
  const ComputeDType dtype_;
  CoreChoice choice_;
  std::string description_;
  Isa isa_;
  mutable ScratchPool pool_;
};

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_FLASH_CORE_H_
