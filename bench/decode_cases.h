// attn_bench's decode cases: one decode step (one new token for each of
// many sessions) of MultiHeadAttention::ForwardPaged over a paged KV cache,
// against a memory roofline measured in the same run.
//
// A step reads every weight once (the QKV and output projections of the
// new tokens) and every cached K and V row of every session once (GQA: one
// read per kv head for all its query heads). bytes_per_step counts both;
// gbps = bytes_per_step / step time. The roofline is a plain streaming read
// (a sum over 64-bit words, on the same threads) of a separate buffer of
// bytes_per_step bytes, timed in rounds alternating with the step;
// bw_efficiency = gbps / roofline_gbps. The step is also split: the same
// step at context 0 (projections only, as good as no cache) gives
// proj_ms, and kv_efficiency is the cache bytes over (step - proj) time
// against the roofline: how close the attention part alone is to memory
// speed.
//
// Thread-safety: run from one thread (each case runs its own OpenMP teams).
#ifndef ATTNSERVE_BENCH_DECODE_CASES_H_
#define ATTNSERVE_BENCH_DECODE_CASES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace attn::bench {

struct DecodeCase {
  std::string name;
  bool bf16_cache = false;
  int64_t sessions = 0;
  int64_t context = 0;  // cached tokens per session before the step
  int64_t d_model = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
};

// The cases: d_model 2048, 16 heads, 4 kv heads, 64 sessions x
// 2048 cached tokens, fp32 and bf16 cache; fp32 weights.
std::vector<DecodeCase> DecodeCases();

// Runs one case for about min_time seconds; the JSON has the fields above
// (or "error").
nlohmann::json RunDecodeCase(const DecodeCase& c, double min_time);

// Human-readable table.
void PrintDecodeHeader();
void PrintDecodeRow(const nlohmann::json& r);

}  // namespace attn::bench

#endif  // ATTNSERVE_BENCH_DECODE_CASES_H_
