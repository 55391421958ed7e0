#include "server/serving/warmup.h"

#include <omp.h>

#include <cmath>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/serving/kernel_threads.h"

namespace attn::server {
namespace {

absl::Status RunShape(const Model& model, const WarmupShape& shape) {
  const int64_t d = model.attention.d_model;
  const int64_t tokens = shape.batch * shape.seq;
  std::vector<float> query(static_cast<size_t>(tokens * d));
  // Small deterministic values: finite scores, nothing degenerate.
  for (size_t i = 0; i < query.size(); ++i) {
    query[i] = 0.01f * std::sin(0.37f * static_cast<float>(i));
  }
  std::vector<float> output(query.size());
  std::vector<float> weights;
  if (shape.return_attention_weights) {
    weights.resize(static_cast<size_t>(shape.batch * model.attention.num_heads *
                                       shape.seq * shape.seq));
  }
  kernels::AttentionInput in;
  in.batch = shape.batch;
  in.q_len = in.kv_len = shape.seq;
  in.query = in.key = in.value = query.data();
  in.causal = model.config.causal;
  kernels::AttentionOutput out;
  out.output = output.data();
  out.weights = weights.empty() ? nullptr : weights.data();
  // ForwardBatch, as the executor calls it (its gather/scatter path too).
  return model.kernel->ForwardBatch(absl::MakeConstSpan(&in, 1),
                                    absl::MakeConstSpan(&out, 1));
}

}  // namespace

absl::StatusOr<absl::Duration> WarmUp(const Model& model, int threads) {
  absl::Status status;
  const absl::Time start = absl::Now();
  std::thread runner([&] {
    for (const WarmupShape& shape : model.config.warmup) {
      // Every thread count the executor may give this call: primitives are
      // cached per thread count.
      for (int n : CandidateThreads(
               AttentionFlops(model.attention, shape.batch, shape.seq,
                              shape.seq, model.config.causal),
               threads)) {
        omp_set_num_threads(n);
        status = RunShape(model, shape);
        if (!status.ok()) break;
      }
      if (!status.ok()) {
        status = absl::Status(
            status.code(),
            absl::StrCat("warm-up of model '", model.name, "' version ",
                         model.version, " (batch ", shape.batch, ", seq ",
                         shape.seq,
                         shape.return_attention_weights ? ", with weights" : "",
                         "): ", status.message()));
        return;
      }
    }
  });
  runner.join();
  if (!status.ok()) return status;
  return absl::Now() - start;
}

}  // namespace attn::server
