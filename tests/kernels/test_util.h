// Helpers for the kernel tests: seeded random weights/inputs/masks, a test
// case description, and comparison against the naive reference.
#ifndef ATTNSERVE_TESTS_KERNELS_TEST_UTIL_H_
#define ATTNSERVE_TESTS_KERNELS_TEST_UTIL_H_

#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"

namespace attn::kernels::testing {

// Normal(0, stddev) values.
std::vector<float> RandomVector(std::mt19937& rng, size_t n, double stddev);

// Weights ~ N(0, 1/in_features) (unit-scale outputs); biases ~ N(0, 0.1) or
// empty when !with_bias. `config` need not have defaults resolved.
AttentionWeights RandomWeights(std::mt19937& rng, const AttentionConfig& config,
                               bool with_bias);

enum class KeyLengths { kNone, kRandom, kWithZero };

// One forward-pass scenario.
struct Case {
  AttentionConfig config;
  int64_t batch = 1;
  int64_t q_len = 1;
  int64_t kv_len = 1;
  bool self_attention = true;  // key = value = query (then kv_len = q_len)
  bool causal = false;
  KeyLengths key_lengths = KeyLengths::kNone;
  MaskKind mask_kind = MaskKind::kNone;
  bool mask_per_batch = false;
  bool mask_fully_masked_row = false;  // one query row has every key masked
  bool with_bias = true;
  bool return_weights = true;
  uint32_t seed = 1;

  std::string DebugString() const;
};

// For GoogleTest's parameter printing.
inline void PrintTo(const Case& c, std::ostream* os) { *os << c.DebugString(); }

// Owns the buffers of one scenario and the AttentionInput viewing them.
struct CaseData {
  AttentionWeights weights;
  std::vector<float> query, key, value;
  std::vector<int32_t> key_lengths;
  std::vector<float> additive_mask;
  std::vector<uint8_t> bool_mask;
  AttentionInput input;
};

// Builds random data for `c` (deterministic in c.seed).
CaseData MakeCaseData(const Case& c);

// Result of comparing the kernel with the reference on one case.
struct Comparison {
  double max_output_error = 0.0;
  // max |kernel - reference| / (1 + |reference|): atol = rtol.
  double max_output_scaled_error = 0.0;
  double max_weights_error = 0.0;
  bool has_non_finite = false;
  std::string error;  // non-empty if Create/Forward failed
};

// Runs `mha` (or a fresh layer if null) on `data` and compares with the
// reference for `c`.
Comparison RunAndCompare(const Case& c, const CaseData& data,
                         const MultiHeadAttention* mha);

}  // namespace attn::kernels::testing

#endif  // ATTNSERVE_TESTS_KERNELS_TEST_UTIL_H_
