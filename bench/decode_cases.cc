#include "bench/decode_cases.h"

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <utility>

#include "bench/bench_timing.h"
#include "kernels/attention.h"
#include "kernels/paged_attention.h"

namespace attn::bench {
namespace {

using kernels::AttentionConfig;
using kernels::AttentionWeights;
using kernels::KvPool;
using kernels::KvPoolLayout;
using kernels::MultiHeadAttention;
using kernels::PagedSequence;

// Fills n floats with a cheap pseudo-random spread in [-scale, scale), in
// parallel (the cache is hundreds of MB).
void FillFloats(float* p, int64_t n, float scale, uint64_t seed) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    uint64_t x = (static_cast<uint64_t>(i) + seed) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    p[i] = scale * (static_cast<float>(x & 0xFFFFFF) / 8388608.0f - 1.0f);
  }
}

// The same in bf16 (the top half of each fp32 value).
void FillBf16(uint16_t* p, int64_t n, float scale, uint64_t seed) {
  constexpr int64_t kChunk = 4096;
#pragma omp parallel
  {
    std::vector<float> tmp(kChunk);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
      const int64_t m = std::min(kChunk, n - c * kChunk);
      FillFloats(tmp.data(), m, scale,
                 seed + static_cast<uint64_t>(c * kChunk));
      for (int64_t i = 0; i < m; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &tmp[i], sizeof(bits));
        p[c * kChunk + i] = static_cast<uint16_t>(bits >> 16);
      }
    }
  }
}

std::vector<float> Floats(int64_t n, float scale, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  FillFloats(v.data(), n, scale, seed);
  return v;
}

AttentionWeights DecodeWeights(const AttentionConfig& c) {
  const int64_t hd = c.d_model / c.num_heads;  // head_dim 0: the default
  const int64_t d = c.d_model, q = c.num_heads * hd, kv = c.num_kv_heads * hd;
  const float s = 1.0f / std::sqrt(static_cast<float>(d));
  AttentionWeights w;
  w.wq = Floats(q * d, s, 1);
  w.wk = Floats(kv * d, s, 2);
  w.wv = Floats(kv * d, s, 3);
  w.wo = Floats(d * q, s, 4);
  w.bq = Floats(q, 0.1f, 5);
  w.bk = Floats(kv, 0.1f, 6);
  w.bv = Floats(kv, 0.1f, 7);
  w.bo = Floats(d, 0.1f, 8);
  return w;
}

// The streaming-read roofline: sums a buffer as 64-bit words on every
// OpenMP thread. The result is kept so that the loop is not dropped.
uint64_t StreamRead(const uint64_t* p, int64_t words) {
  uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t i = 0; i < words; ++i) total += p[i];
  return total;
}

// An anonymous mapping, as the server's KV pool (server/serving/kv_cache.cc)
// and the roofline buffer are: both get the same pages (transparent huge
// pages only where the system gives them without madvise).
class Mapping {
 public:
  explicit Mapping(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("attn_bench: mmap");
      std::exit(1);
    }
    if (std::getenv("ATTN_BENCH_HUGEPAGES") != nullptr) {
      madvise(p, bytes, MADV_HUGEPAGE);
    }
    base_ = static_cast<uint8_t*>(p);
  }
  ~Mapping() { munmap(base_, bytes_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  uint8_t* get() const { return base_; }

 private:
  size_t bytes_;
  uint8_t* base_;
};

}  // namespace

std::vector<DecodeCase> DecodeCases() {
  std::vector<DecodeCase> cases;
  for (bool bf16 : {false, true}) {
    cases.push_back({std::string("decode_d2048_h16_kv4_64x2048_") +
                         (bf16 ? "bf16cache" : "f32cache"),
                     bf16, 64, 2048, 2048, 16, 4});
  }
  return cases;
}

nlohmann::json RunDecodeCase(const DecodeCase& dc, double min_time) {
  nlohmann::json r = {{"name", dc.name}, {"kind", "decode"}};
  AttentionConfig config;
  config.d_model = dc.d_model;
  config.num_heads = dc.heads;
  config.num_kv_heads = dc.kv_heads;
  auto mha = MultiHeadAttention::Create(config, DecodeWeights(config));
  if (!mha.ok()) {
    r["error"] = mha.status().ToString();
    return r;
  }
  const AttentionConfig& c = (*mha)->config();
  const KvPoolLayout layout =
      kernels::KvPoolLayoutFor(c, dc.bf16_cache ? KvPoolLayout::Dtype::kBf16
                                                : KvPoolLayout::Dtype::kF32);
  const int64_t per_session =
      (dc.context + 1 + layout.block_tokens - 1) / layout.block_tokens;
  const int64_t blocks = per_session * dc.sessions;
  const int64_t half_elements = blocks * layout.block_elements();
  // K and V halves, filled as a real cache would be (random values).
  const size_t half_bytes =
      static_cast<size_t>(half_elements * layout.element_bytes());
  Mapping k(half_bytes), v(half_bytes);
  for (uint8_t* half : {k.get(), v.get()}) {
    if (dc.bf16_cache) {
      FillBf16(reinterpret_cast<uint16_t*>(half), half_elements, 1.0f,
               half == k.get() ? 11 : 12);
    } else {
      FillFloats(reinterpret_cast<float*>(half), half_elements, 1.0f,
                 half == k.get() ? 11 : 12);
    }
  }
  KvPool pool{layout, k.get(), v.get(), blocks};
  // Every session's blocks scattered over the pool, as after churn.
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(7));
  std::vector<PagedSequence> step(static_cast<size_t>(dc.sessions));
  std::vector<PagedSequence> proj_only = step;
  for (int64_t s = 0; s < dc.sessions; ++s) {
    const int32_t* table = ids.data() + s * per_session;
    step[s] = {dc.context, 1, table, per_session};
    proj_only[s] = {0, 1, table, per_session};
  }
  const std::vector<float> x = Floats(dc.sessions * c.d_model, 1.0f, 21);
  std::vector<float> out(x.size());
  absl::Status status;
  auto run = [&](const std::vector<PagedSequence>& seqs) {
    absl::Status s = (*mha)->ForwardPaged(x.data(), seqs, pool, out.data());
    if (!s.ok() && status.ok()) status = s;
  };

  const int64_t q_width = c.num_heads * c.head_dim;
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  const int64_t weight_bytes =
      4 * (c.d_model * (q_width + 2 * kv_width) + q_width * c.d_model +
           q_width + 2 * kv_width + c.d_model);
  const int64_t kv_bytes =
      dc.sessions * (dc.context + 1) * kv_width * 2 * layout.element_bytes();
  const int64_t bytes = weight_bytes + kv_bytes;
  const int64_t words = bytes / 8;
  Mapping stream_buffer(static_cast<size_t>(words) * 8);
  uint64_t* buffer = reinterpret_cast<uint64_t*>(stream_buffer.get());
  FillFloats(reinterpret_cast<float*>(buffer), words * 2, 1.0f, 31);
  uint64_t sink = 0;
  const std::vector<double> t =
      TimeMediansInterleaved({[&] { run(step); }, [&] { run(proj_only); },
                              [&] { sink += StreamRead(buffer, words); }},
                             min_time);
  if (!status.ok()) {
    r["error"] = status.ToString();
    return r;
  }
  const double step_s = t[0], proj_s = t[1], stream_s = t[2];
  const double gbps = bytes / step_s / 1e9;
  const double roofline = bytes / stream_s / 1e9;
  const double kv_gbps = kv_bytes / std::max(step_s - proj_s, 1e-9) / 1e9;
  r.update({{"cache_dtype", dc.bf16_cache ? "bf16" : "fp32"},
            {"sessions", dc.sessions},
            {"context", dc.context},
            {"d_model", c.d_model},
            {"heads", c.num_heads},
            {"kv_heads", c.num_kv_heads},
            {"threads", omp_get_max_threads()},
            {"step_ms", step_s * 1e3},
            {"proj_ms", proj_s * 1e3},
            {"tokens_per_second", dc.sessions / step_s},
            {"weight_bytes", weight_bytes},
            {"kv_bytes", kv_bytes},
            {"bytes_per_step", bytes},
            {"gbps", gbps},
            {"roofline_gbps", roofline},
            {"bw_efficiency", gbps / roofline},
            {"kv_gbps", kv_gbps},
            {"kv_efficiency", kv_gbps / roofline},
            {"stream_checksum", sink % 1000},
            {"implementation", (*mha)->ImplementationSummary()}});
  return r;
}

void PrintDecodeHeader() {
  std::printf("%-40s %8s %8s %10s %8s %8s %8s %7s %7s\n", "decode case",
              "step ms", "proj ms", "tokens/s", "MB/step", "GB/s", "roofline",
              "bw_eff", "kv_eff");
}

void PrintDecodeRow(const nlohmann::json& r) {
  if (r.contains("error")) {
    std::printf("%-40s %s\n", r["name"].get<std::string>().c_str(),
                r["error"].get<std::string>().c_str());
    return;
  }
  std::printf("%-40s %8.2f %8.2f %10.0f %8.0f %8.1f %8.1f %7.2f %7.2f\n",
              r["name"].get<std::string>().c_str(), r["step_ms"].get<double>(),
              r["proj_ms"].get<double>(), r["tokens_per_second"].get<double>(),
              r["bytes_per_step"].get<double>() / 1e6, r["gbps"].get<double>(),
              r["roofline_gbps"].get<double>(),
              r["bw_efficiency"].get<double>(),
              r["kv_efficiency"].get<double>());
  std::fflush(stdout);
}

}  // namespace attn::bench
