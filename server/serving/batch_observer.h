// What the Batcher reports about its work, for metrics: one call per queue
// entry and exit, one call per kernel call. Knows nothing of Prometheus.
//
//   class MyObserver : public BatchObserver { ... };
//   Batcher::Options options;
//   options.observer = &my_observer;  // not owned; outlives the Batcher
//
// Granularity contract: methods are called per request (TaskQueued,
// TaskDequeued) or per kernel call (BatchComputed), never per token, so an
// implementation may take a short lock or touch a few atomics.
//
// Thread-safety: implementations must be thread-safe. TaskQueued runs on the
// submitting (gRPC) thread with the batcher's lock held, so it must be quick
// and must not call back into the Batcher; the others run on the executor
// thread.
#ifndef ATTNSERVE_SERVER_SERVING_BATCH_OBSERVER_H_
#define ATTNSERVE_SERVER_SERVING_BATCH_OBSERVER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/models/model_repository.h"

namespace attn::server {

class BatchObserver {
 public:
  virtual ~BatchObserver() = default;

  // A task for `model` entered its queue.
  virtual void TaskQueued(const Model& model) = 0;

  // A task for `model` left its queue after `waited`, to be computed or
  // dropped (cancelled / deadline passed).
  virtual void TaskDequeued(const Model& model, absl::Duration waited) = 0;

  // One kernel call for `model` served `requests` requests holding `tokens`
  // query tokens in total and took `compute`; `status` is the kernel's.
  virtual void BatchComputed(const Model& model, int64_t requests,
                             int64_t tokens, absl::Duration compute,
                             const absl::Status& status) = 0;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_SERVING_BATCH_OBSERVER_H_
