// attn_bench: throughput of MultiHeadAttention against oneDNN's own GEMM
// roofline, measured in the same process and run.
//
//   attn_bench [--json] [--filter REGEX] [--threads N] [--min_time SECONDS]
//              [--list] [--list_isas] [--list_known_isas]
//
// For each case: achieved GFLOP/s (2*M*N*K per GEMM: the QKV and output
// projections, plus Q*K^T and P*V over unmasked (query, key) pairs only),
// tokens/s, and the roofline: GFLOP/s of the best oneDNN matmul for
// [tokens, d_model] x [d_model, 3*d_model] in the same dtype (weights in the
// layout oneDNN picks, format_tag::any, reordered once; bf16 source, fp32
// destination for bf16). efficiency = gflops / roofline_gflops. Where oneDNN
// has no bf16 matmul (CPUs without AVX-512, or ONEDNN_MAX_CPU_ISA=AVX2),
// bf16 layers run on fp32 GEMMs, and so does their roofline
// ("roofline_dtype": "f32"). --list_isas prints the ATTN_KERNEL_ISA paths
// this CPU runs, --list_known_isas every path on any CPU.
// Cases marked "extra" (the 16k-token memory case, the single 16-token
// request, the decode cases of bench/decode_cases.h: one decode step of 64
// sessions over a paged KV cache against a streaming-read memory roofline)
// run only when --filter names them. Times are medians over repeated
// calls; each case and its roofline are timed in alternating rounds, so that
// the machine's drift cancels in the efficiency.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "bench/decode_cases.h"
#include "kernels/attention.h"
#include "kernels/kernel_isa.h"
#include "nlohmann/json.hpp"
#include "oneapi/dnnl/dnnl.hpp"

namespace {

using attn::kernels::AttentionConfig;
using attn::kernels::AttentionInput;
using attn::kernels::AttentionOutput;
using attn::kernels::AttentionWeights;
using attn::kernels::ComputeDType;
using attn::kernels::MultiHeadAttention;

struct BenchCase {
  std::string name;
  bool bf16 = false;
  int64_t batch = 1;  // sequences (requests when `requests`)
  int64_t seq = 0;
  int64_t d_model = 0;
  int64_t heads = 0;
  bool causal = false;
  // Each sequence is a separate request, all through one ForwardBatch call.
  bool requests = false;
  bool extra = false;          // only when --filter names it
  double rope_theta = 0.0;     // AttentionConfig::rope_theta
  int64_t sliding_window = 0;  // AttentionConfig::sliding_window
};

std::vector<BenchCase> Cases() {
  std::vector<BenchCase> cases;
  for (bool bf16 : {false, true}) {
    const std::string dt = bf16 ? "bf16" : "fp32";
    for (int64_t seq : {128, 512}) {
      for (int64_t batch : {1, 8}) {
        cases.push_back({"d768_h12_b" + std::to_string(batch) + "_s" +
                             std::to_string(seq) + "_" + dt,
                         bf16, batch, seq, 768, 12, false, false});
      }
    }
    cases.push_back(
        {"small_64x16_d256_h4_" + dt, bf16, 64, 16, 256, 4, false, true});
    cases.push_back({"small_b64_s16_d256_h4_onerequest_" + dt, bf16, 64, 16,
                     256, 4, false, false});
    cases.push_back({"long_d512_h8_s4096_causal_" + dt, bf16, 1, 4096, 512, 8,
                     true, false});
    cases.push_back({"long_d512_h8_s16384_causal_" + dt, bf16, 1, 16384, 512, 8,
                     true, false, true});
    // Rotary embeddings, and a 512-key sliding window (extra: compare with
    // long_d512_h8_s4096_causal_*).
    cases.push_back({"long_d512_h8_s4096_causal_rope_" + dt, bf16, 1, 4096, 512,
                     8, true, false, true, 10000.0, 0});
    cases.push_back({"long_d512_h8_s4096_causal_rope_window512_" + dt, bf16, 1,
                     4096, 512, 8, true, false, true, 10000.0, 512});
    // One 16-token request as the server's executor runs it: the kernel
    // time in bench/serving_tax.py (extra: it is a latency, not a rate).
    cases.push_back(
        {"single_1x16_d256_h4_" + dt, bf16, 1, 16, 256, 4, false, true, true});
  }
  return cases;
}

std::vector<float> Random(std::mt19937& rng, size_t n, double stddev) {
  std::normal_distribution<float> dist(0.0f, static_cast<float>(stddev));
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

AttentionWeights RandomWeights(std::mt19937& rng, int64_t d) {
  AttentionWeights w;
  const double s = 1.0 / std::sqrt(double(d));
  w.wq = Random(rng, d * d, s);
  w.wk = Random(rng, d * d, s);
  w.wv = Random(rng, d * d, s);
  w.wo = Random(rng, d * d, s);
  w.bq = Random(rng, d, 0.1);
  w.bk = Random(rng, d, 0.1);
  w.bv = Random(rng, d, 0.1);
  w.bo = Random(rng, d, 0.1);
  return w;
}

// The roofline: the best oneDNN matmul [m, k] x [k, n], weights packed
// (format_tag::any, reordered once). run() executes it once.
struct Roofline {
  double flop = 0;
  std::string impl;
  std::string dtype;  // "bf16" or "f32"
  std::function<void()> run;
};

// The matmul primitive descriptor for [m, k] x [k, n] with `in_type`
// source and weights; false if this CPU (or ONEDNN_MAX_CPU_ISA) has none.
bool MatmulPd(const dnnl::engine& engine, int64_t m, int64_t k, int64_t n,
              dnnl::memory::data_type in_type,
              dnnl::matmul::primitive_desc* pd) {
  using dnnl::memory;
  using Tag = memory::format_tag;
  const memory::desc src_md({m, k}, in_type, Tag::ab);
  const memory::desc wei_any({k, n}, in_type, Tag::any);
  const memory::desc dst_md({m, n}, memory::data_type::f32, Tag::ab);
  try {
    *pd = dnnl::matmul::primitive_desc(
        dnnl::matmul::desc(src_md, wei_any, dst_md), engine);
  } catch (const dnnl::error&) {
    return false;
  }
  return true;
}

Roofline MakeRoofline(int64_t m, int64_t k, int64_t n, bool bf16) {
  using dnnl::memory;
  using DT = memory::data_type;
  using Tag = memory::format_tag;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  DT in_type = bf16 ? DT::bf16 : DT::f32;
  dnnl::matmul::primitive_desc pd;
  if (!MatmulPd(engine, m, k, n, in_type, &pd)) {
    // No bf16 matmul here: the layer's bf16 GEMMs run on fp32 ones too.
    in_type = DT::f32;
    if (!MatmulPd(engine, m, k, n, in_type, &pd)) {
      std::fprintf(stderr,
                   "roofline: oneDNN has no f32 matmul %lldx%lldx%lld\n",
                   static_cast<long long>(m), static_cast<long long>(k),
                   static_cast<long long>(n));
      std::exit(1);
    }
  }
  const memory::desc src_md = pd.src_desc();
  const memory::desc dst_md = pd.dst_desc();
  memory src(src_md, engine), dst(dst_md, engine),
      wei(pd.weights_desc(), engine);
  // Fill src and (plain) weights, reorder the weights once.
  std::mt19937 rng(7);
  std::vector<float> src_f = Random(rng, m * k, 1.0);
  std::vector<float> wei_f = Random(rng, k * n, 1.0 / std::sqrt(double(k)));
  memory src_user({{m, k}, DT::f32, Tag::ab}, engine, src_f.data());
  memory wei_user({{k, n}, DT::f32, Tag::ab}, engine, wei_f.data());
  dnnl::reorder(src_user, src).execute(stream, src_user, src);
  dnnl::reorder(wei_user, wei).execute(stream, wei_user, wei);
  stream.wait();
  dnnl::matmul mm(pd);
  Roofline roof;
  roof.flop = 2.0 * m * n * k;
  roof.impl = pd.impl_info_str();
  roof.dtype = in_type == DT::bf16 ? "bf16" : "f32";
  roof.run = [mm, stream, src, wei, dst]() mutable {
    mm.execute(
        stream,
        {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
    stream.wait();
  };
  return roof;
}

struct Result {
  nlohmann::json json;
  std::vector<float> output;  // first sequence's output, for bf16 error
};

Result RunCase(const BenchCase& bc, int threads, double min_time) {
  const int64_t d = bc.d_model;
  const int64_t tokens = bc.batch * bc.seq;
  std::mt19937 rng(1234);
  AttentionWeights weights = RandomWeights(rng, d);
  const std::vector<float> x = Random(rng, tokens * d, 1.0);
  std::vector<float> y(tokens * d);

  AttentionConfig config;
  config.d_model = d;
  config.num_heads = bc.heads;
  config.compute_dtype =
      bc.bf16 ? ComputeDType::kBFloat16 : ComputeDType::kFloat32;
  config.rope_theta = bc.rope_theta;
  config.sliding_window = bc.sliding_window;
  auto mha = MultiHeadAttention::Create(config, std::move(weights));
  if (!mha.ok()) {
    std::fprintf(stderr, "%s: %s\n", bc.name.c_str(),
                 mha.status().ToString().c_str());
    std::exit(1);
  }
  std::vector<AttentionInput> inputs;
  std::vector<AttentionOutput> outputs;
  const int64_t items = bc.requests ? bc.batch : 1;
  for (int64_t i = 0; i < items; ++i) {
    AttentionInput in;
    in.batch = bc.requests ? 1 : bc.batch;
    in.q_len = in.kv_len = bc.seq;
    in.query = in.key = in.value = x.data() + i * bc.seq * d;
    in.causal = bc.causal;
    inputs.push_back(in);
    outputs.push_back({y.data() + i * bc.seq * d, nullptr});
  }
  std::function<void()> run = [&] {
    absl::Status s = bc.requests ? (*mha)->ForwardBatch(inputs, outputs)
                                 : (*mha)->Forward(inputs[0], outputs[0]);
    if (!s.ok()) {
      std::fprintf(stderr, "%s: %s\n", bc.name.c_str(), s.ToString().c_str());
      std::exit(1);
    }
  };
  const Roofline roof = MakeRoofline(tokens, d, 3 * d, bc.bf16);
  const std::vector<double> medians =
      attn::bench::TimeMediansInterleaved({run, roof.run}, min_time);
  const double t = medians[0], t_roof = medians[1];
  const double roof_gflops = roof.flop / t_roof / 1e9;

  // FLOPs: projections, then unmasked Q.K^T and P.V work.
  const double proj = 2.0 * tokens * d * 3 * d + 2.0 * tokens * d * d;
  double pairs =
      bc.causal ? bc.seq * (bc.seq + 1) / 2.0 : double(bc.seq) * bc.seq;
  if (bc.sliding_window > 0 && bc.sliding_window < bc.seq) {
    const double w = double(bc.sliding_window);
    pairs = w * (w + 1) / 2.0 + (bc.seq - w) * w;  // keys actually attended
  }
  const double core = 2.0 * 2.0 * bc.batch * pairs * d;  // heads*hd = d
  const double gflops = (proj + core) / t / 1e9;

  Result r;
  r.json = {{"name", bc.name},
            {"dtype", bc.bf16 ? "bf16" : "fp32"},
            {"batch", bc.batch},
            {"seq", bc.seq},
            {"d_model", d},
            {"heads", bc.heads},
            {"causal", bc.causal},
            {"rope_theta", bc.rope_theta},
            {"sliding_window", bc.sliding_window},
            {"api", bc.requests ? "ForwardBatch" : "Forward"},
            {"requests", items},
            {"threads", threads},
            {"time_ms", t * 1e3},
            {"gflop", (proj + core) / 1e9},
            {"gflops", gflops},
            {"roofline_gflops", roof_gflops},
            {"roofline_impl", roof.impl},
            {"roofline_dtype", roof.dtype},
            {"efficiency", gflops / roof_gflops},
            {"tokens_per_second", tokens / t},
            {"implementation", (*mha)->ImplementationSummary()}};
  r.output = y;
  return r;
}

void Usage() {
  std::fprintf(stderr,
               "usage: attn_bench [--json] [--filter REGEX] [--threads N] "
               "[--min_time SECONDS] [--list] [--list_isas] "
               "[--list_known_isas]\n");
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false, list = false;
  std::string filter;
  int threads = omp_get_max_threads();
  double min_time = 1.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        Usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json") {
      json = true;
    } else if (a == "--list") {
      list = true;
    } else if (a == "--list_isas") {
      for (const std::string& isa : attn::kernels::SupportedKernelIsas()) {
        std::printf("%s\n", isa.c_str());
      }
      return 0;
    } else if (a == "--list_known_isas") {
      for (const std::string& isa : attn::kernels::KnownKernelIsas()) {
        std::printf("%s\n", isa.c_str());
      }
      return 0;
    } else if (a == "--filter") {
      filter = value();
    } else if (a == "--threads") {
      threads = std::atoi(value().c_str());
    } else if (a == "--min_time") {
      min_time = std::atof(value().c_str());
    } else {
      Usage();
      return 2;
    }
  }
  if (threads < 1) {
    std::fprintf(stderr, "--threads must be >= 1\n");
    return 2;
  }
  omp_set_num_threads(threads);
  std::regex re;
  try {
    re = std::regex(filter.empty() ? ".*" : filter);
  } catch (const std::regex_error& e) {
    std::fprintf(stderr, "bad --filter regex: %s\n", e.what());
    return 2;
  }

  nlohmann::json all = nlohmann::json::array();
  std::map<std::string, Result> fp32_results;  // by name without dtype
  bool header = false;
  for (const BenchCase& bc : Cases()) {
    if (!std::regex_search(bc.name, re)) continue;
    if (bc.extra && filter.empty()) continue;
    if (list) {
      std::printf("%s\n", bc.name.c_str());
      continue;
    }
    if (!json && !header) {
      std::printf("%-40s %9s %9s %9s %6s %12s\n", "case", "ms", "GFLOP/s",
                  "roofline", "eff", "tokens/s");
      header = true;
    }
    Result r = RunCase(bc, threads, min_time);
    const std::string base = bc.name.substr(0, bc.name.size() - 5);
    if (!bc.bf16) {
      fp32_results[base] = r;
    } else if (fp32_results.count(base)) {
      const Result& f = fp32_results[base];
      r.json["speedup_vs_fp32"] = r.json["tokens_per_second"].get<double>() /
                                  f.json["tokens_per_second"].get<double>();
      double err = 0;
      for (size_t i = 0; i < r.output.size(); ++i) {
        err = std::max(err, double(std::abs(r.output[i] - f.output[i])));
      }
      r.json["max_abs_err_vs_fp32"] = err;
    }
    if (!json) {
      std::printf("%-40s %9.3f %9.1f %9.1f %6.2f %12.0f", bc.name.c_str(),
                  r.json["time_ms"].get<double>(),
                  r.json["gflops"].get<double>(),
                  r.json["roofline_gflops"].get<double>(),
                  r.json["efficiency"].get<double>(),
                  r.json["tokens_per_second"].get<double>());
      if (r.json.contains("speedup_vs_fp32")) {
        std::printf("  x%.2f vs fp32, err %.2g",
                    r.json["speedup_vs_fp32"].get<double>(),
                    r.json["max_abs_err_vs_fp32"].get<double>());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    all.push_back(r.json);
  }
  // Decode cases (bench/decode_cases.h): extra, only when --filter names
  // them (e.g. --filter decode).
  bool decode_header = false;
  for (const attn::bench::DecodeCase& dc : attn::bench::DecodeCases()) {
    if (filter.empty() || !std::regex_search(dc.name, re)) continue;
    if (list) {
      std::printf("%s\n", dc.name.c_str());
      continue;
    }
    nlohmann::json r = attn::bench::RunDecodeCase(dc, min_time);
    if (!json) {
      if (!decode_header) attn::bench::PrintDecodeHeader();
      decode_header = true;
      attn::bench::PrintDecodeRow(r);
    }
    all.push_back(r);
  }
  if (json) std::printf("%s\n", all.dump(2).c_str());
  return 0;
}
