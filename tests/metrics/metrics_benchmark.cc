// Cost of recording the metrics of one request, as the server does it:
// StartRequest + SetModel + TaskQueued + TaskDequeued + BatchComputed +
// Finish. Not a ctest; run by hand:
//   build/tests/metrics/metrics_benchmark
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "prometheus/registry.h"
#include "server/observability/metrics.h"

namespace attn::server {
namespace {

std::vector<std::shared_ptr<const Model>> Models(int n) {
  std::vector<std::shared_ptr<const Model>> models;
  for (int i = 0; i < n; ++i) {
    auto model = std::make_shared<Model>();
    model->name = "model" + std::to_string(i);
    model->version = 1;
    models.push_back(std::move(model));
  }
  return models;
}

void BM_RecordOneRequest(benchmark::State& state) {
  const auto models = Models(static_cast<int>(state.range(0)));
  ServerMetrics metrics(models);
  const Model& model = *models.back();
  const std::string name = model.name;
  for (auto _ : state) {
    RequestMetrics r = metrics.StartRequest();
    r.SetModel(name);
    metrics.TaskQueued(model);
    metrics.TaskDequeued(model, absl::Microseconds(120));
    metrics.BatchComputed(model, 1, 64, absl::Microseconds(300),
                          absl::OkStatus());
    r.Finish(absl::StatusCode::kOk, /*reached_executor=*/true);
  }
}
BENCHMARK(BM_RecordOneRequest)->Arg(1)->Arg(32)->ThreadRange(1, 2);

void BM_Scrape(benchmark::State& state) {
  ServerMetrics metrics(Models(static_cast<int>(state.range(0))));
  for (auto _ : state) {
    benchmark::DoNotOptimize(metrics.registry()->Collect());
  }
}
BENCHMARK(BM_Scrape)->Arg(1)->Arg(32);

}  // namespace
}  // namespace attn::server

BENCHMARK_MAIN();
