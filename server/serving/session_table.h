// SessionTable: the live sessions of every model and their paged KV cache.
//
//   SessionTable::Options options;
//   options.kv_cache_bytes = 1 << 30;
//   auto table = SessionTable::Create(options, repository->List());
//   SessionKey key{scope, "llama", 1, "chat-42"};
//   absl::StatusOr<std::unique_ptr<SessionStep>> step =
//       (*table)->BeginStep(key, model, /*start=*/true, /*position=*/0,
//                           /*new_tokens=*/128);
//   // ... the executor computes it, then step->Finish(true) ...
//   (*table)->End(key);
//
// A session is one causal sequence of one model version whose K/V stay on
// the server between requests. Its id is scoped by `SessionKey`: the
// caller's scope (the bearer token when auth is on, else ""), the model
// name, the version and the client's id; no lookup ever crosses scopes.
// A session pins its Model (shared_ptr): that version stays loaded while the
// session lives (LiveSessions() tells a version's unloader to wait).
//
// Steps: BeginStep checks the request against the session (start /
// unknown id / position / length limits), allocates the blocks for the new
// tokens -- evicting idle sessions when the cache is full -- and marks the
// session busy until the step is finished. A session takes one step at a
// time: a step of a busy session is FAILED_PRECONDITION (a decode step needs
// the previous step's output anyway).
//
// Freeing (each counted for metrics with its reason, except EndSession):
//   * EndSession: at once (a busy session's blocks when its step finishes);
//   * idle_timeout: a session with no step for the model's
//     sessions.idle_timeout_s is freed by a sweeper (every 250 ms) or when
//     it is next looked up, whichever is first;
//   * cache_full: when a step needs blocks and fewer are free, the least
//     recently used IDLE sessions (of any model) are freed until enough
//     are, but only if that suffices; otherwise nothing is evicted and the
//     step is RESOURCE_EXHAUSTED. Busy sessions are never evicted;
//   * max_sessions: a start when the version already has
//     sessions.max_sessions live frees its least recently used idle session.
// A freed session's next step gets NOT_FOUND telling the client to start
// again with the full prefix; a session is never silently restarted empty.
//
// Thread-safety: all methods may be called concurrently from any thread.
#ifndef ATTNSERVE_SERVER_SERVING_SESSION_TABLE_H_
#define ATTNSERVE_SERVER_SERVING_SESSION_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/models/model_repository.h"
#include "server/serving/clock.h"
#include "server/serving/kv_cache.h"
#include "server/serving/session_observer.h"
#include "server/serving/session_step.h"

namespace attn::server {

struct SessionKey {
  std::string scope;  // caller identity ("" when auth is off)
  std::string model;
  int64_t version = 0;  // resolved (never 0)
  std::string id;
};

class SessionTable {
 public:
  struct Options {
    // KV cache budget, bytes. 0 means KvBlockPool::DefaultBytes().
    // Default: 0. REQUIRES: >= 0.
    int64_t kv_cache_bytes = 0;
    // Time source for idle times. Not owned. Default (nullptr): real clock.
    Clock* clock = nullptr;
    // Told about cache use, live sessions and evictions. Not owned; must
    // outlive the table. Default (nullptr): nothing reported.
    SessionObserver* observer = nullptr;
    // How often the sweeper frees expired sessions. Default: 250 ms.
    absl::Duration sweep_interval = absl::Milliseconds(250);
  };

  // Reserves the cache (pages sized for `models`) and starts the sweeper.
  // Errors: INVALID_ARGUMENT (budget below one block), RESOURCE_EXHAUSTED.
  static absl::StatusOr<std::unique_ptr<SessionTable>> Create(
      const Options& options,
      const std::vector<std::shared_ptr<const Model>>& models);

  // Stops the sweeper. REQUIRES: no step is still unfinished.
  ~SessionTable();
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // Admits one step of `new_tokens` tokens (see the class comment).
  // `position`, when set, must equal the session's length. Errors:
  //   ALREADY_EXISTS       start with a live id;
  //   NOT_FOUND            no such live session and not a start;
  //   FAILED_PRECONDITION  position differs from the length (both numbers),
  //                        a start at position != 0, a step already
  //                        running, or the model's blocks do not fit a page;
  //   INVALID_ARGUMENT     length + new_tokens > max_sequence_length;
  //   RESOURCE_EXHAUSTED   not enough free or evictable blocks, or
  //                        max_sessions busy sessions.
  // REQUIRES: model matches key (name and version); new_tokens >= 1.
  absl::StatusOr<std::unique_ptr<SessionStep>> BeginStep(
      const SessionKey& key, std::shared_ptr<const Model> model, bool start,
      std::optional<int64_t> position, int64_t new_tokens);

  // Ends a session; returns its length. Errors: NOT_FOUND.
  absl::StatusOr<int64_t> End(const SessionKey& key);

  // The version a live session `id` of `model` in `scope` is pinned to, so
  // that its steps and EndSession reach it even after that version left the
  // repository (unloaded or superseded). `version` 0: the newest version
  // with such a session. Null when there is none.
  std::shared_ptr<const Model> PinnedModel(const std::string& scope,
                                           const std::string& model,
                                           int64_t version,
                                           const std::string& id) const;

  // Live sessions of `model` version `version`.
  int64_t LiveSessions(const std::string& model, int64_t version) const;
  // Frees every session idle past its timeout at `now`; returns how many.
  int64_t ExpireIdle(absl::Time now);

  // The cache's size (pages × page bytes, <= kv_cache_bytes) and page size.
  int64_t capacity_bytes() const { return capacity_bytes_; }
  int64_t page_bytes() const { return page_bytes_; }

  // Implementation details follow. API users need not read.
  //
  // Invariants (under mu_): every page is either in pool_'s free list or in
  // exactly one session's `blocks` (sessions_ or an ended busy session);
  // a session in sessions_ has blocks.size() >= ceil(length / block);
  // live_[model] counts the entries of sessions_ per model name.
  struct Session;

 private:
  class Step;
  friend class Step;

  SessionTable(const Options& options, std::unique_ptr<KvBlockPool> pool);

  static std::string MapKey(const SessionKey& key);
  absl::Duration IdleTimeout(const Session& s) const;
  // Removes `it` from sessions_ and frees its blocks (or, when busy, leaves
  // them for its step to free). `reason` null: EndSession (not counted).
  void RemoveLocked(const std::string& map_key, const char* reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts LRU idle sessions (other than `keep`) until `pages` are free;
  // false (nothing evicted) if that is impossible.
  bool MakeRoomLocked(int64_t pages, const Session* keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t FinishStep(Session* session, int64_t new_tokens, bool applied);
  void ReportLocked(const std::string& model)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SweepLoop();

  Clock* const clock_;
  SessionObserver* const observer_;
  const absl::Duration sweep_interval_;
  const int64_t capacity_bytes_;
  const int64_t page_bytes_;

  mutable absl::Mutex mu_;
  std::unique_ptr<KvBlockPool> pool_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<Session>> sessions_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> live_ ABSL_GUARDED_BY(mu_);  // by name
  std::map<std::pair<std::string, int64_t>, int64_t> live_versions_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sweeper_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_SESSION_TABLE_H_
