#include "server/serving/inflight_budget.h"

#include <unistd.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attn::server {
namespace {

std::string MiB(int64_t bytes) {
  return absl::StrCat(bytes / (1 << 20), " MiB");
}

}  // namespace

InflightBudget::Reservation& InflightBudget::Reservation::operator=(
    Reservation&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.budget_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void InflightBudget::Reservation::Release() {
  if (budget_ != nullptr && bytes_ > 0) {
    budget_->in_use_.fetch_sub(bytes_, std::memory_order_relaxed);
  }
  budget_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<InflightBudget::Reservation> InflightBudget::Reserve(
    int64_t bytes) {
  if (bytes > limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("request needs about ", MiB(bytes),
                     " of server memory, more than the "
                     "whole in-flight budget (--max_inflight_bytes=",
                     limit_, ", ", MiB(limit_),
                     "); send smaller requests or raise --max_inflight_bytes"));
  }
  int64_t used = in_use_.load(std::memory_order_relaxed);
  while (true) {
    if (used + bytes > limit_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "server memory budget is full: this request needs about ", MiB(bytes),
          " and ", MiB(used), " of --max_inflight_bytes=", limit_, " (",
          MiB(limit_),
          ") are held by requests in flight; retry with backoff "
          "or raise --max_inflight_bytes"));
    }
    if (in_use_.compare_exchange_weak(used, used + bytes,
                                      std::memory_order_relaxed)) {
      return Reservation(this, bytes);
    }
  }
}

int64_t InflightBudget::DefaultLimit() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  constexpr int64_t kCap = int64_t{4} << 30;
  if (pages <= 0 || page_size <= 0) return kCap;
  return std::min<int64_t>(kCap, static_cast<int64_t>(pages) * page_size / 4);
}

}  // namespace attn::server
