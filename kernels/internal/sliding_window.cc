#include "kernels/internal/sliding_window.h"

#include <algorithm>
#include <limits>

namespace attn::kernels::internal {
namespace {

constexpr int64_t kRows = FlashCore::kBlockQ;

// Leading rows whose window starts at key 0 (i + off - window < 0).
int64_t HeadRows(int64_t window, int64_t q_len, int64_t kv_len) {
  return std::clamp<int64_t>(window - (kv_len - q_len), 0, q_len);
}

}  // namespace

void WindowMasks::Prepare(int64_t nq) {
  std::vector<uint8_t>& m = masks_[nq];
  if (!m.empty()) return;
  const int64_t width = window_ + nq - 1;
  m.assign(static_cast<size_t>(nq * width), 0);
  for (int64_t r = 0; r < nq; ++r) {
    std::fill(m.begin() + r * width, m.begin() + r * width + r, 1);
  }
}

int64_t WindowSequenceCount(int64_t window, int64_t q_len, int64_t kv_len) {
  const int64_t head = HeadRows(window, q_len, kv_len);
  return (head > 0 ? 1 : 0) + (q_len - head + kRows - 1) / kRows;
}

int64_t SplitWindow(const FlashSequence& whole, int64_t window,
                    int64_t ctx_stride, WindowMasks* masks,
                    FlashSequence* out) {
  const int64_t off = whole.kv_len - whole.q_len;
  const int64_t head = HeadRows(window, whole.q_len, whole.kv_len);
  int64_t n = 0;
  if (head > 0) {
    FlashSequence& s = out[n++];
    s = whole;
    s.q_len = head;
    s.kv_len = head + off;
    s.key_limit = std::min(whole.key_limit, s.kv_len);
  }
  for (int64_t i0 = head; i0 < whole.q_len; i0 += kRows) {
    const int64_t nq = std::min(kRows, whole.q_len - i0);
    const int64_t first_key = i0 + off - window + 1;  // >= 1
    FlashSequence& s = out[n++];
    s = whole;
    s.q = whole.q + i0 * whole.q_stride;
    s.k = whole.k + first_key * whole.kv_stride;
    s.v = whole.v + first_key * whole.kv_stride;
    s.context = whole.context + i0 * ctx_stride;
    s.q_len = nq;
    s.kv_len = window + nq - 1;
    s.key_limit = std::clamp<int64_t>(whole.key_limit - first_key, 0, s.kv_len);
    s.causal = true;
    masks->Prepare(nq);
    s.mask_kind = MaskKind::kBoolean;
    s.mask = masks->Get(nq);
    s.row_masked = whole.row_masked + i0;
  }
  return n;
}

AttentionInput BakeWindowMask(int64_t window, const AttentionInput& in,
                              std::vector<uint8_t>* bool_mask,
                              std::vector<float>* add_mask) {
  AttentionInput out = in;
  const int64_t masks =
      in.mask_kind != MaskKind::kNone && in.mask_per_batch ? in.batch : 1;
  const int64_t q = in.q_len, kv = in.kv_len, off = kv - q;
  const int64_t size = masks * q * kv;
  const bool additive = in.mask_kind == MaskKind::kAdditive;
  if (additive) {
    const float* src = static_cast<const float*>(in.mask);
    add_mask->assign(src, src + size);
  } else if (in.mask_kind == MaskKind::kBoolean) {
    const uint8_t* src = static_cast<const uint8_t*>(in.mask);
    bool_mask->assign(src, src + size);
  } else {
    bool_mask->assign(static_cast<size_t>(size), 0);
  }
  for (int64_t m = 0; m < masks; ++m) {
    for (int64_t i = 0; i < q; ++i) {
      const int64_t first = std::clamp<int64_t>(i + off - window + 1, 0, kv);
      const int64_t row = (m * q + i) * kv;
      if (additive) {
        std::fill(add_mask->begin() + row, add_mask->begin() + row + first,
                  -std::numeric_limits<float>::infinity());
      } else {
        std::fill(bool_mask->begin() + row, bool_mask->begin() + row + first,
                  1);
      }
    }
  }
  if (additive) {
    out.mask = add_mask->data();
  } else {
    out.mask_kind = MaskKind::kBoolean;
    out.mask = bool_mask->data();
    out.mask_per_batch = masks > 1;
  }
  return out;
}

}  // namespace attn::kernels::internal
