// What SessionTable reports about sessions and the KV cache, for metrics.
// Knows nothing of Prometheus (see server/observability/session_metrics.h).
//
// Thread-safety: implementations must be thread-safe. Methods are called
// with the table's lock held: they must be quick and must not call back
// into the table.
#ifndef ATTNSERVE_SERVER_SERVING_SESSION_OBSERVER_H_
#define ATTNSERVE_SERVER_SERVING_SESSION_OBSERVER_H_

#include <cstdint>
#include <string>

namespace attn::server {

// Why a session was freed without an EndSession.
inline constexpr char kEvictCacheFull[] = "cache_full";
inline constexpr char kEvictMaxSessions[] = "max_sessions";
inline constexpr char kEvictIdleTimeout[] = "idle_timeout";

class SessionObserver {
 public:
  virtual ~SessionObserver() = default;

  // KV cache bytes held by sessions and free (their sum is the budget).
  virtual void CacheBytes(int64_t used, int64_t free) = 0;
  // Live sessions of the model named `model` (all versions) is now `count`.
  virtual void SessionsActive(const std::string& model, int64_t count) = 0;
  // A session of `model` was freed for `reason` (one of kEvict*).
  virtual void SessionEvicted(const std::string& model, const char* reason) = 0;
  // A session ended (any way) holding `length` tokens.
  virtual void SessionEnded(int64_t length) = 0;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_SESSION_OBSERVER_H_
