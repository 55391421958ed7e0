// Sliding-window attention (AttentionConfig::sliding_window) on the flash
// core without changing its per-ISA units: query row i of a causal
// sequence with kv_len - q_len = off sees keys j with
// i + off - window < j <= i + off.
//
//  * Without an explicit mask, each batch row is split into flash
//    sequences: the leading rows whose window starts at key 0 form one
//    plain causal sequence; every later block of up to kBlockQ rows becomes
//    its own causal sequence over just the keys its window covers (window
//    + rows - 1 keys, read in place), with a shared boolean "diagonal" mask
//    (row r masks its first r keys). Work and memory stay O(S * window).
//  * With an explicit mask, or when attention weights are returned, the
//    window is baked into a full [q_len, kv_len] mask (BakeWindowMask).
//
// Internal: not part of the public API. Thread-safety: WindowMasks is
// built by one thread, then read concurrently; the free functions are
// stateless.
#ifndef ATTNSERVE_KERNELS_INTERNAL_SLIDING_WINDOW_H_
#define ATTNSERVE_KERNELS_INTERNAL_SLIDING_WINDOW_H_

#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/internal/flash_core.h"

namespace attn::kernels::internal {

// The diagonal masks of one call: for rows nq in [1, kBlockQ], the boolean
// [nq][window + nq - 1] matrix whose row r masks keys 0 .. r - 1.
class WindowMasks {
 public:
  explicit WindowMasks(int64_t window)
      : window_(window), masks_(FlashCore::kBlockQ + 1) {}
  // Builds the mask for nq rows if it is not there yet.
  void Prepare(int64_t nq);
  const uint8_t* Get(int64_t nq) const { return masks_[nq].data(); }

 private:
  const int64_t window_;
  std::vector<std::vector<uint8_t>> masks_;  // by nq
};

// How many flash sequences SplitWindow makes of one batch row.
int64_t WindowSequenceCount(int64_t window, int64_t q_len, int64_t kv_len);

// Writes the WindowSequenceCount() sequences of `whole` (one batch row:
// causal, kv_len >= q_len, no explicit mask) to `out`, calling
// masks->Prepare for the row counts it uses. Returns the count.
int64_t SplitWindow(const FlashSequence& whole, int64_t window,
                    int64_t ctx_stride, WindowMasks* masks, FlashSequence* out);

// Returns a copy of `in` whose mask also masks every key before the window
// (a boolean mask when `in` had none; the same kind otherwise), kept alive
// in *bool_mask or *add_mask.
AttentionInput BakeWindowMask(int64_t window, const AttentionInput& in,
                              std::vector<uint8_t>* bool_mask,
                              std::vector<float>* add_mask);

}  // namespace attn::kernels::internal

#endif  // ATTNSERVE_KERNELS_INTERNAL_SLIDING_WINDOW_H_
