// Small status-propagation macros (Debian's Abseil 20220623 has no
// ABSL_RETURN_IF_ERROR / ASSIGN_OR_RETURN).
//
//   ATTN_RETURN_IF_ERROR(DoThing());
//   ATTN_ASSIGN_OR_RETURN(std::vector<float> v, Decode(t));
#ifndef ATTNSERVE_COMMON_STATUS_MACROS_H_
#define ATTNSERVE_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` from the enclosing function if it is not OK.
#define ATTN_RETURN_IF_ERROR(expr)                   \
  do {                                               \
    ::absl::Status attn_status_macro_value = (expr); \
    if (!attn_status_macro_value.ok()) {             \
      return attn_status_macro_value;                \
    }                                                \
  } while (false)

#define ATTN_STATUS_MACROS_CONCAT_INNER(x, y) x##y
#define ATTN_STATUS_MACROS_CONCAT(x, y) ATTN_STATUS_MACROS_CONCAT_INNER(x, y)

// Evaluates `rexpr` (an absl::StatusOr<T>); returns its status if not OK,
// otherwise move-assigns its value to `lhs` (which may be a declaration).
#define ATTN_ASSIGN_OR_RETURN(lhs, rexpr) \
  ATTN_ASSIGN_OR_RETURN_IMPL(             \
      ATTN_STATUS_MACROS_CONCAT(attn_statusor_, __LINE__), lhs, rexpr)

#define ATTN_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                               \
  if (!statusor.ok()) {                                  \
    return statusor.status();                            \
  }                                                      \
  lhs = std::move(statusor).value()

#endif  // ATTNSERVE_COMMON_STATUS_MACROS_H_
