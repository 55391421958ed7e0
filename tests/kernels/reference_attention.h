// A naive reference implementation of multi-head attention, for tests.
//
// Straightforward loops with double accumulation, written independently of
// the oneDNN kernels: it follows the contract in kernels/attention.h
// (defaults, masking rules, GQA head mapping, fully masked rows) and is meant
// to be obviously correct rather than fast. Any test target may link the
// `attn_reference` library to compare against it.
//
// Thread-safety: stateless; safe to call concurrently.
#ifndef ATTNSERVE_TESTS_KERNELS_REFERENCE_ATTENTION_H_
#define ATTNSERVE_TESTS_KERNELS_REFERENCE_ATTENTION_H_

#include <vector>

#include "kernels/attention.h"

namespace attn::reference {

struct ReferenceResult {
  std::vector<double> output;   // [batch, q_len, d_model]
  std::vector<double> weights;  // [batch, num_heads, q_len, kv_len]
};

// Computes the attention layer described by `config` (defaults are resolved
// here: num_kv_heads = num_heads, head_dim = d_model / num_heads, scale =
// 1/sqrt(head_dim)) on `input`. A query row whose keys are all masked has
// zero weights and an all-zero output row (the output bias is not added).
// REQUIRES: config, weights and input valid per kernels/attention.h.
ReferenceResult ReferenceAttention(const kernels::AttentionConfig& config,
                                   const kernels::AttentionWeights& weights,
                                   const kernels::AttentionInput& input);

}  // namespace attn::reference

#endif  // ATTNSERVE_TESTS_KERNELS_REFERENCE_ATTENTION_H_
