// InflightBudget: a byte budget for the request memory the server holds
// across all calls (received, decoded, queued, computing, answering), so
// that many concurrent large requests cannot exhaust the machine.
//
//   InflightBudget budget(int64_t{1} << 30);
//   absl::StatusOr<InflightBudget::Reservation> r = budget.Reserve(bytes);
//   if (!r.ok()) return r.status();  // RESOURCE_EXHAUSTED, names the limit
//   ...  // the bytes are returned when `*r` is destroyed
//
// Admission is all-or-nothing and never waits: a request that does not fit
// now is refused at once (RESOURCE_EXHAUSTED, retryable by the client), so
// a burst costs the server nothing but the rejection.
//
// Thread-safety: Reserve() and the accessors may be called concurrently from
// any thread (one atomic counter). A Reservation is owned by one holder and
// may be moved across threads; the budget must outlive every Reservation.
#ifndef ATTNSERVE_SERVER_SERVING_INFLIGHT_BUDGET_H_
#define ATTNSERVE_SERVER_SERVING_INFLIGHT_BUDGET_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"

namespace attn::server {

class InflightBudget {
 public:
  // Bytes held by one request until destroyed (or moved from).
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& other) noexcept
        : budget_(other.budget_), bytes_(other.bytes_) {
      other.budget_ = nullptr;
      other.bytes_ = 0;
    }
    Reservation& operator=(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    ~Reservation() { Release(); }

    int64_t bytes() const { return bytes_; }
    // Returns the bytes now (idempotent).
    void Release();

   private:
    friend class InflightBudget;
    Reservation(InflightBudget* budget, int64_t bytes)
        : budget_(budget), bytes_(bytes) {}
    InflightBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // REQUIRES: limit_bytes >= 1.
  explicit InflightBudget(int64_t limit_bytes) : limit_(limit_bytes) {}
  InflightBudget(const InflightBudget&) = delete;
  InflightBudget& operator=(const InflightBudget&) = delete;

  // Takes `bytes` from the budget, or RESOURCE_EXHAUSTED (without taking
  // anything) when they do not fit next to what is held now; the message
  // names the request's need, the use and the --max_inflight_bytes limit.
  // REQUIRES: bytes >= 0.
  absl::StatusOr<Reservation> Reserve(int64_t bytes);

  int64_t limit() const { return limit_; }
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

  // The default limit: a quarter of physical memory, at most 4 GiB.
  static int64_t DefaultLimit();

 private:
  const int64_t limit_;
  std::atomic<int64_t> in_use_{0};
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_INFLIGHT_BUDGET_H_
