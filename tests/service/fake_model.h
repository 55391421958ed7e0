// Models with a fake kernel, for batcher and validation tests (no oneDNN):
// the kernel records each call (a ForwardBatch call is ONE call, logged with
// its item count and the OpenMP thread count it was called with), can be
// held at a gate, can be told to fail, and writes output = query (so
// results are checkable) and uniform weights.
#ifndef ATTNSERVE_TESTS_SERVICE_FAKE_MODEL_H_
#define ATTNSERVE_TESTS_SERVICE_FAKE_MODEL_H_

#ifdef _OPENMP
#include <omp.h>
#endif

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/status_macros.h"
#include "kernels/attention.h"
#include "server/models/model_repository.h"

namespace attn::server::testing {

// Shared record of kernel calls plus a gate that holds them. Thread-safe.
class KernelLog {
 public:
  // Kernel calls block in Forward() until Open() (default: open).
  void Close() {
    absl::MutexLock lock(&mu_);
    open_ = false;
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  // Blocks until at least `n` calls have entered Forward().
  void AwaitEntered(size_t n) {
    absl::MutexLock lock(&mu_);
    awaited_ = n;
    mu_.Await(absl::Condition(this, &KernelLog::EnoughEntered));
  }
  std::vector<std::string> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // Items (requests) of each call, in call order (1 for Forward()).
  std::vector<size_t> call_items() const {
    absl::MutexLock lock(&mu_);
    return call_items_;
  }
  // omp_get_max_threads() on entry of each call, in call order.
  std::vector<int> call_threads() const {
    absl::MutexLock lock(&mu_);
    return call_threads_;
  }
  // Kernel calls from now on return `status` (OK: compute normally).
  void SetStatus(absl::Status status) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
  }

  // Called by FakeKernel; returns the status the call must return.
  absl::Status EnterAndWait(const std::string& tag, size_t items = 1) {
    absl::MutexLock lock(&mu_);
    calls_.push_back(tag);
    call_items_.push_back(items);
#ifdef _OPENMP
    call_threads_.push_back(omp_get_max_threads());
#else
    call_threads_.push_back(1);
#endif
    mu_.Await(absl::Condition(&open_));
    return status_;
  }

 private:
  bool EnoughEntered() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return calls_.size() >= awaited_;
  }

  mutable absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<std::string> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> call_items_ ABSL_GUARDED_BY(mu_);
  std::vector<int> call_threads_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  size_t awaited_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakeKernel final : public kernels::MultiHeadAttention {
 public:
  FakeKernel(const kernels::AttentionConfig& config, std::string tag,
             KernelLog* log)
      : config_(config), tag_(std::move(tag)), log_(log) {}

  absl::Status Forward(const kernels::AttentionInput& in,
                       const kernels::AttentionOutput& out) const override {
    if (log_ != nullptr) ATTN_RETURN_IF_ERROR(log_->EnterAndWait(tag_));
    Compute(in, out);
    return absl::OkStatus();
  }
  absl::Status ForwardBatch(
      absl::Span<const kernels::AttentionInput> inputs,
      absl::Span<const kernels::AttentionOutput> outputs) const override {
    if (log_ != nullptr) {
      ATTN_RETURN_IF_ERROR(log_->EnterAndWait(tag_, inputs.size()));
    }
    for (size_t i = 0; i < inputs.size(); ++i) Compute(inputs[i], outputs[i]);
    return absl::OkStatus();
  }
  const kernels::AttentionConfig& config() const override { return config_; }

 private:
  void Compute(const kernels::AttentionInput& in,
               const kernels::AttentionOutput& out) const {
    const int64_t n = in.batch * in.q_len * config_.d_model;
    for (int64_t i = 0; i < n; ++i) out.output[i] = in.query[i];
    if (out.weights != nullptr) {
      const int64_t w = in.batch * config_.num_heads * in.q_len * in.kv_len;
      for (int64_t i = 0; i < w; ++i) {
        out.weights[i] = 1.0f / static_cast<float>(in.kv_len);
      }
    }
  }

  kernels::AttentionConfig config_;
  std::string tag_;
  KernelLog* log_;
};

// A model named `name` (d_model 8, 2 heads) whose kernel logs to `log`
// (may be null) under the tag `name`, or "name@vN" when version != 1.
inline std::shared_ptr<const Model> MakeFakeModel(
    const std::string& name, KernelLog* log,
    const BatchingOptions& batching = BatchingOptions(), int64_t d_model = 8,
    int64_t num_heads = 2, int64_t max_sequence_length = 64,
    int64_t version = 1) {
  auto model = std::make_shared<Model>();
  model->name = name;
  model->version = version;
  model->source = "<fake>";
  model->config.num_heads = num_heads;
  model->config.max_sequence_length = max_sequence_length;
  model->config.batching = batching;
  // No warm-up passes: the tests count every kernel call the fake sees.
  model->config.warmup.clear();
  model->attention.d_model = d_model;
  model->attention.num_heads = num_heads;
  model->attention.num_kv_heads = num_heads;
  model->attention.head_dim = d_model / num_heads;
  model->attention.scale = 1.0f;
  const std::string tag =
      version == 1 ? name : name + "@v" + std::to_string(version);
  model->kernel = std::make_unique<FakeKernel>(model->attention, tag, log);
  return model;
}

}  // namespace attn::server::testing

#endif  // ATTNSERVE_TESTS_SERVICE_FAKE_MODEL_H_
