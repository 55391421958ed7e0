// SessionStep: one admitted step of a session, as the executor sees it: the
// positions its new tokens take, the blocks that hold (and will hold) the
// session's K/V, and the call that applies or abandons it.
//
// Created by SessionTable::BeginStep (which allocated the blocks and marked
// the session busy), carried in BatchTask::step, and finished by the
// Batcher exactly once, BEFORE the task's `done` runs, so that the client's
// next step always sees the outcome of this one. Destroying an unfinished
// step abandons it (Finish(false)), so no path leaves a session busy.
//
// Thread-safety: one step is used by one thread at a time (the service
// thread that created it, then the executor).
#ifndef ATTNSERVE_SERVER_SERVING_SESSION_STEP_H_
#define ATTNSERVE_SERVER_SERVING_SESSION_STEP_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "server/serving/kv_cache.h"

namespace attn::server {

class SessionStep {
 public:
  virtual ~SessionStep() = default;

  // Position of the step's first token (the session's length before it).
  int64_t start_position() const { return start_position_; }
  // Tokens the step appends.
  int64_t new_tokens() const { return new_tokens_; }
  // Blocks holding positions 0 .. start_position + new_tokens - 1, in order,
  // numbered as the kernel counts them in pool().
  const std::vector<int32_t>& block_table() const { return block_table_; }
  // Where those blocks live.
  const KvPoolView& pool() const { return pool_; }

  // Applies the step (applied: the session's length grows by new_tokens)
  // or abandons it (the session keeps its length; a session this step
  // started is removed). Returns the session's length afterwards. Second
  // and later calls do nothing and return the same length.
  virtual int64_t Finish(bool applied) = 0;

 protected:
  SessionStep(int64_t start_position, int64_t new_tokens,
              std::vector<int32_t> block_table, const KvPoolView& pool)
      : start_position_(start_position),
        new_tokens_(new_tokens),
        block_table_(std::move(block_table)),
        pool_(pool) {}

 private:
  const int64_t start_position_;
  const int64_t new_tokens_;
  const std::vector<int32_t> block_table_;
  const KvPoolView pool_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_SESSION_STEP_H_
