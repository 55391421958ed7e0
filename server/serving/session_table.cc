#include "server/serving/session_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attn::server {

struct SessionTable::Session {
  SessionKey key;
  std::string map_key;
  std::shared_ptr<const Model> model;  // pins the version
  std::vector<int32_t> blocks;
  int64_t length = 0;
  absl::Time last_used;
  bool busy = false;   // a step is admitted and not finished
  bool ended = false;  // removed from sessions_ while busy
};

namespace {

int64_t BlocksFor(int64_t tokens) {
  return (tokens + KvBlockPool::kBlockTokens - 1) / KvBlockPool::kBlockTokens;
}

std::string Describe(const SessionKey& key) {
  return absl::StrCat("session '", key.id, "' of model '", key.model,
                      "' version ", key.version);
}

}  // namespace

class SessionTable::Step final : public SessionStep {
 public:
  Step(SessionTable* table, std::shared_ptr<Session> session,
       int64_t start_position, int64_t new_tokens,
       std::vector<int32_t> block_table, const KvPoolView& pool)
      : SessionStep(start_position, new_tokens, std::move(block_table), pool),
        table_(table),
        session_(std::move(session)) {}

  ~Step() override { Finish(false); }

  int64_t Finish(bool applied) override {
    if (!finished_) {
      finished_ = true;
      length_ = table_->FinishStep(session_.get(), new_tokens(), applied);
    }
    return length_;
  }

 private:
  SessionTable* const table_;
  const std::shared_ptr<Session> session_;
  bool finished_ = false;
  int64_t length_ = 0;
};

absl::StatusOr<std::unique_ptr<SessionTable>> SessionTable::Create(
    const Options& options,
    const std::vector<std::shared_ptr<const Model>>& models) {
  if (options.kv_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_cache_bytes is ", options.kv_cache_bytes,
                     "; expected 0 (default) or a positive byte count"));
  }
  const int64_t budget = options.kv_cache_bytes > 0
                             ? options.kv_cache_bytes
                             : KvBlockPool::DefaultBytes();
  absl::StatusOr<std::unique_ptr<KvBlockPool>> pool =
      KvBlockPool::Create(budget, KvBlockPool::PageBytesFor(models));
  if (!pool.ok()) return pool.status();
  return std::unique_ptr<SessionTable>(
      new SessionTable(options, std::move(*pool)));
}

SessionTable::SessionTable(const Options& options,
                           std::unique_ptr<KvBlockPool> pool)
    : clock_(options.clock != nullptr ? options.clock : Clock::Real()),
      observer_(options.observer),
      sweep_interval_(options.sweep_interval),
      capacity_bytes_(pool->capacity_bytes()),
      page_bytes_(pool->page_bytes()),
      pool_(std::move(pool)) {
  if (observer_ != nullptr) observer_->CacheBytes(0, capacity_bytes_);
  sweeper_ = std::thread([this] { SweepLoop(); });
}

SessionTable::~SessionTable() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  sweeper_.join();
}

std::string SessionTable::MapKey(const SessionKey& key) {
  // Length-prefixed, so that no two keys collide whatever bytes they hold.
  return absl::StrCat(key.scope.size(), ":", key.scope, key.model.size(), ":",
                      key.model, key.version, ":", key.id);
}

absl::Duration SessionTable::IdleTimeout(const Session& s) const {
  return absl::Seconds(s.model->config.sessions.idle_timeout_s);
}

void SessionTable::ReportLocked(const std::string& model) {
  if (observer_ == nullptr) return;
  observer_->CacheBytes(pool_->used_bytes(),
                        capacity_bytes_ - pool_->used_bytes());
  observer_->SessionsActive(model, live_[model]);
}

void SessionTable::RemoveLocked(const std::string& map_key,
                                const char* reason) {
  auto it = sessions_.find(map_key);
  if (it == sessions_.end()) return;
  std::shared_ptr<Session> s = std::move(it->second);
  sessions_.erase(it);
  const std::string model = s->key.model;
  --live_[model];
  if (--live_versions_[{model, s->key.version}] == 0) {
    live_versions_.erase({model, s->key.version});
  }
  if (s->busy) {
    s->ended = true;  // its step frees the blocks when it finishes
  } else {
    pool_->Release(s->blocks);
    s->blocks.clear();
  }
  if (observer_ != nullptr) {
    if (reason != nullptr) observer_->SessionEvicted(model, reason);
    observer_->SessionEnded(s->length);
  }
  ReportLocked(model);
}

bool SessionTable::MakeRoomLocked(int64_t pages, const Session* keep) {
  if (pool_->free_pages() >= pages) return true;
  std::vector<Session*> idle;
  int64_t reclaimable = pool_->free_pages();
  for (const auto& [k, s] : sessions_) {
    if (s->busy || s.get() == keep) continue;
    idle.push_back(s.get());
    reclaimable += static_cast<int64_t>(s->blocks.size());
  }
  if (reclaimable < pages) return false;
  std::sort(idle.begin(), idle.end(), [](const Session* a, const Session* b) {
    return a->last_used < b->last_used;
  });
  for (Session* s : idle) {
    if (pool_->free_pages() >= pages) break;
    const std::string map_key = s->map_key;  // s dies in RemoveLocked
    RemoveLocked(map_key, kEvictCacheFull);
  }
  return pool_->free_pages() >= pages;
}

absl::StatusOr<std::unique_ptr<SessionStep>> SessionTable::BeginStep(
    const SessionKey& key, std::shared_ptr<const Model> model, bool start,
    std::optional<int64_t> position, int64_t new_tokens) {
  absl::StatusOr<KvPoolView> view;
  const std::string map_key = MapKey(key);
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  view = pool_->ViewFor(*model);
  if (!view.ok()) return view.status();
  auto it = sessions_.find(map_key);
  if (it != sessions_.end() && !it->second->busy &&
      now - it->second->last_used >= IdleTimeout(*it->second)) {
    RemoveLocked(map_key, kEvictIdleTimeout);
    it = sessions_.end();
  }
  const int64_t max_len = model->config.max_sequence_length;
  std::shared_ptr<Session> session;
  if (start) {
    if (it != sessions_.end()) {
      return absl::AlreadyExistsError(absl::StrCat(
          Describe(key), " already exists (", it->second->length,
          " tokens); continue it without session_start, or end it with "
          "EndSession before starting it again"));
    }
    if (position.has_value() && *position != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "session_position is ", *position, " on a session_start; a new ",
          Describe(key), " starts at position 0"));
    }
    if (new_tokens > max_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the first step of ", Describe(key), " has ", new_tokens,
          " tokens, more than max_sequence_length (", max_len, ")"));
    }
    auto count = live_versions_.find({key.model, key.version});
    if (count != live_versions_.end() &&
        count->second >= model->config.sessions.max_sessions) {
      Session* lru = nullptr;
      for (const auto& [k, s] : sessions_) {
        if (s->busy || s->key.model != key.model ||
            s->key.version != key.version) {
          continue;
        }
        if (lru == nullptr || s->last_used < lru->last_used) lru = s.get();
      }
      if (lru == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "model '", key.model, "' version ", key.version, " has ",
            count->second,
            " live sessions (sessions.max_sessions) and all are "
            "computing a step; retry later or end unused sessions"));
      }
      const std::string lru_key = lru->map_key;
      RemoveLocked(lru_key, kEvictMaxSessions);
    }
    session = std::make_shared<Session>();
    session->key = key;
    session->map_key = map_key;
    session->model = std::move(model);
  } else {
    if (it == sessions_.end()) {
      return absl::NotFoundError(absl::StrCat(
          Describe(key),
          " does not exist: it was never started, was ended, expired after "
          "sessions.idle_timeout_s, or was evicted to free the KV cache. "
          "Start it again with session_start and the full prefix"));
    }
    session = it->second;
    if (session->busy) {
      return absl::FailedPreconditionError(absl::StrCat(
          Describe(key), " is still computing a step (from position ",
          session->length, "); send the next step after its answer"));
    }
    if (position.has_value() && *position != session->length) {
      return absl::FailedPreconditionError(
          absl::StrCat("session_position is ", *position, " but ",
                       Describe(key), " holds ", session->length, " tokens",
                       *position < session->length
                           ? " (this step, or a later one, was already applied)"
                           : " (a step is missing)",
                       "; send the step for position ", session->length,
                       ", or start again with the full prefix"));
    }
    if (session->length + new_tokens > max_len) {
      return absl::InvalidArgumentError(
          absl::StrCat("this step would grow ", Describe(key), " from ",
                       session->length, " to ", session->length + new_tokens,
                       " tokens, past max_sequence_length (", max_len,
                       "); end the session"));
    }
  }
  const int64_t need = BlocksFor(session->length + new_tokens) -
                       static_cast<int64_t>(session->blocks.size());
  if (need > 0) {
    if (!MakeRoomLocked(need, session.get())) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache is full: ", Describe(key), " needs ", need, " more ",
          KvBlockPool::kBlockTokens, "-token blocks, ", pool_->free_pages(),
          " of ", pool_->total_pages(),
          " are free and the others are held by sessions computing a step "
          "(or this one); retry later, or raise --kv_cache_bytes (now ",
          capacity_bytes_, " bytes)"));
    }
    pool_->Allocate(need, &session->blocks);
  }
  session->busy = true;
  session->last_used = now;
  if (start) {
    sessions_[map_key] = session;
    ++live_[key.model];
    ++live_versions_[{key.model, key.version}];
  }
  ReportLocked(key.model);
  // The step's blocks in the kernel's numbering (see KvPoolView).
  const int64_t used = BlocksFor(session->length + new_tokens);
  std::vector<int32_t> table;
  table.reserve(static_cast<size_t>(used));
  for (int64_t i = 0; i < used; ++i) {
    table.push_back(
        static_cast<int32_t>(session->blocks[i] * view->blocks_per_page));
  }
  return std::unique_ptr<SessionStep>(new Step(
      this, session, session->length, new_tokens, std::move(table), *view));
}

int64_t SessionTable::FinishStep(Session* session, int64_t new_tokens,
                                 bool applied) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  session->busy = false;
  session->last_used = now;
  if (applied) session->length += new_tokens;
  if (session->ended) {
    pool_->Release(session->blocks);
    session->blocks.clear();
    ReportLocked(session->key.model);
    return session->length;
  }
  if (!applied && session->length == 0) {
    // An abandoned first step: the session never existed for the client.
    RemoveLocked(session->map_key, nullptr);
    return 0;
  }
  // Keep only the blocks the cached tokens use.
  const int64_t keep = BlocksFor(session->length);
  if (static_cast<int64_t>(session->blocks.size()) > keep) {
    pool_->Release(absl::MakeConstSpan(session->blocks).subspan(keep));
    session->blocks.resize(keep);
    ReportLocked(session->key.model);
  }
  return session->length;
}

absl::StatusOr<int64_t> SessionTable::End(const SessionKey& key) {
  const std::string map_key = MapKey(key);
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(map_key);
  if (it == sessions_.end()) {
    return absl::NotFoundError(absl::StrCat(
        Describe(key),
        " does not exist (never started, already ended, expired or "
        "evicted); nothing to end"));
  }
  const int64_t length = it->second->length;
  RemoveLocked(map_key, nullptr);
  return length;
}

std::shared_ptr<const Model> SessionTable::PinnedModel(
    const std::string& scope, const std::string& model, int64_t version,
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  // live_versions_ is ordered by (name, version): newest last.
  for (auto it = live_versions_.rbegin(); it != live_versions_.rend(); ++it) {
    const auto& [name, v] = it->first;
    if (name != model || it->second == 0) continue;
    if (version != 0 && v != version) continue;
    auto found = sessions_.find(MapKey(SessionKey{scope, model, v, id}));
    if (found != sessions_.end()) return found->second->model;
  }
  return nullptr;
}

int64_t SessionTable::LiveSessions(const std::string& model,
                                   int64_t version) const {
  absl::MutexLock lock(&mu_);
  auto it = live_versions_.find({model, version});
  return it == live_versions_.end() ? 0 : it->second;
}

int64_t SessionTable::ExpireIdle(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> expired;
  for (const auto& [k, s] : sessions_) {
    if (!s->busy && now - s->last_used >= IdleTimeout(*s)) {
      expired.push_back(k);
    }
  }
  for (const std::string& k : expired) RemoveLocked(k, kEvictIdleTimeout);
  return static_cast<int64_t>(expired.size());
}

void SessionTable::SweepLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&stop), sweep_interval_)) {
        return;
      }
    }
    ExpireIdle(clock_->Now());
  }
}

}  // namespace attn::server
