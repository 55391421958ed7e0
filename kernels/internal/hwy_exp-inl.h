// Vector exp(x) shared by the Highway units (flash_hwy.cc,
// paged_decode_hwy.cc). A Highway per-target header: it is included inside
// HWY_NAMESPACE once per target (the include guard toggles with
// HWY_TARGET_TOGGLE), so it has no ordinary include guard.
// Internal: not part of the public API. Thread-safety: pure functions.
#if defined(ATTNSERVE_KERNELS_INTERNAL_HWY_EXP_INL_H_) == \
    defined(HWY_TARGET_TOGGLE)
#ifdef ATTNSERVE_KERNELS_INTERNAL_HWY_EXP_INL_H_
#undef ATTNSERVE_KERNELS_INTERNAL_HWY_EXP_INL_H_
#else
#define ATTNSERVE_KERNELS_INTERNAL_HWY_EXP_INL_H_
#endif

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attn::kernels::internal::HWY_NAMESPACE {

// exp(x) on fp32 lanes; lanes with x < -87 (including -inf) give exactly 0.
// The same range reduction and degree-6 polynomial as the AVX-512 unit's
// Exp512 (flash_simd.h).
template <class D>
HWY_INLINE hwy::HWY_NAMESPACE::Vec<D> Exp(D d, hwy::HWY_NAMESPACE::Vec<D> x) {
  namespace hn = hwy::HWY_NAMESPACE;
  using V = hn::Vec<D>;
  const hn::RebindToSigned<D> di;
  const V lo = hn::Set(d, -87.0f);
  const auto live = hn::Ge(x, lo);
  x = hn::Min(hn::Max(x, lo), hn::Set(d, 88.0f));
  const V n = hn::Round(hn::Mul(x, hn::Set(d, 1.44269504088896341f)));
  V r = hn::NegMulAdd(n, hn::Set(d, 0.693359375f), x);
  r = hn::NegMulAdd(n, hn::Set(d, -2.12194440e-4f), r);
  V p = hn::Set(d, 1.0f / 720.0f);
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 120.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 24.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f / 6.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 0.5f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  p = hn::MulAdd(p, r, hn::Set(d, 1.0f));
  // 2^n for n in [-126, 127]: the exponent field alone.
  const auto e =
      hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, n), hn::Set(di, 127)));
  return hn::IfThenElseZero(live, hn::Mul(p, hn::BitCast(d, e)));
}

}  // namespace attn::kernels::internal::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // ATTNSERVE_KERNELS_INTERNAL_HWY_EXP_INL_H_ toggle
