#include "server/serving/kernel_threads.h"

#include <algorithm>

namespace attn::server {
namespace {

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

}  // namespace

int64_t AttentionFlops(const kernels::AttentionConfig& config, int64_t batch,
                       int64_t q_len, int64_t kv_len, bool causal) {
  const int64_t d = config.d_model;
  const int64_t q_width = config.num_heads * config.head_dim;
  const int64_t kv_width = config.num_kv_heads * config.head_dim;
  const int64_t queries = batch * q_len;
  const int64_t keys = batch * kv_len;
  // Q and output projections over the queries, K and V over the keys.
  const int64_t projections =
      2 * queries * d * q_width * 2 + 2 * keys * d * kv_width * 2;
  // Visible pairs per sequence: query i sees keys j <= i + (kv_len - q_len).
  int64_t pairs = q_len * kv_len;
  if (causal) {
    const int64_t offset = kv_len - q_len;
    pairs = 0;
    for (int64_t i = 0; i < q_len; ++i) {
      pairs += std::clamp<int64_t>(i + offset + 1, 0, kv_len);
    }
  }
  const int64_t core = 4 * batch * pairs * q_width;
  return projections + core;
}

std::vector<int> CandidateThreads(int64_t flops, int budget) {
  budget = std::max(1, budget);
  if (budget == 1 || flops >= kTeamAlwaysFlops) return {budget};
  return {1, budget};
}

KernelThreadChooser::KernelThreadChooser(int budget)
    : budget_(std::max(1, budget)) {}

int KernelThreadChooser::SizeClass(int64_t flops) {
  int c = 0;
  while (flops > 1) {
    flops >>= 1;
    ++c;
  }
  return c;
}

int KernelThreadChooser::Choose(int64_t flops) {
  if (CandidateThreads(flops, budget_).size() == 1) return budget_;
  Size& size = sizes_[SizeClass(flops)];
  ++size.calls;
  const std::array<std::vector<double>, 2>& cost = size.cost;
  // Not yet timed enough: the candidate with fewer samples (one thread
  // first).
  if (cost[0].size() < kMinSamples || cost[1].size() < kMinSamples) {
    return cost[1].size() < cost[0].size() ? budget_ : 1;
  }
  const int best = Median(cost[1]) < Median(cost[0]) ? 1 : 0;
  const int pick = size.calls % kExploreEvery == 0 ? 1 - best : best;
  return pick == 0 ? 1 : budget_;
}

void KernelThreadChooser::Record(int64_t flops, int threads,
                                 absl::Duration compute) {
  if (CandidateThreads(flops, budget_).size() == 1) return;
  if (threads != 1 && threads != budget_) return;
  Size& size = sizes_[SizeClass(flops)];
  const int side = threads == 1 ? 0 : 1;
  const double ns_per_flop = absl::ToDoubleNanoseconds(compute) /
                             static_cast<double>(std::max<int64_t>(1, flops));
  std::vector<double>& ring = size.cost[side];
  if (ring.size() < kWindow) {
    ring.push_back(ns_per_flop);
  } else {
    ring[size.next[side]] = ns_per_flop;
    size.next[side] = (size.next[side] + 1) % kWindow;
  }
}

}  // namespace attn::server
