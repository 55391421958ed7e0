// Helpers that build wire tensors and requests for the service tests.
#ifndef ATTNSERVE_TESTS_SERVICE_TEST_TENSORS_H_
#define ATTNSERVE_TESTS_SERVICE_TEST_TENSORS_H_

#include <cstdint>
#include <random>
#include <vector>

#include "attn/v1/attention.pb.h"
#include "server/api/tensor_codec.h"

namespace attn::server::testing {

// Uniform(-1, 1) values from a fixed seed.
inline std::vector<float> RandomValues(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

inline int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A tensor of `shape` holding `values` encoded as `dtype`.
inline v1::Tensor MakeTensor(const std::vector<int64_t>& shape,
                             const std::vector<float>& values,
                             v1::DataType dtype = v1::FLOAT32) {
  v1::Tensor t;
  EncodeFloatTensor(values.data(), shape, dtype, &t);
  return t;
}

// A tensor of `shape` with random values.
inline v1::Tensor RandomTensor(const std::vector<int64_t>& shape, uint32_t seed,
                               v1::DataType dtype = v1::FLOAT32) {
  return MakeTensor(shape, RandomValues(Product(shape), seed), dtype);
}

inline v1::Tensor BoolTensor(const std::vector<int64_t>& shape,
                             const std::vector<uint8_t>& values) {
  v1::Tensor t;
  for (int64_t d : shape) t.add_shape(d);
  t.set_dtype(v1::BOOL);
  t.set_data(std::string(values.begin(), values.end()));
  return t;
}

// The values of a float tensor, decoded (no finiteness check).
inline std::vector<float> Values(const v1::Tensor& t) {
  std::vector<float> v;
  absl::Status s = DecodeFloatTensor(
      t, "tensor", NonFinitePolicy::kAllowNegativeInfinity, &v);
  if (!s.ok()) v.clear();
  return v;
}

}  // namespace attn::server::testing

#endif  // ATTNSERVE_TESTS_SERVICE_TEST_TENSORS_H_
