// Slot: carries one attention request at a time to the server, over a
// unary Attend call (UnarySlot) or one long-lived AttendStream
// (StreamSlot), and reports its completion to a SlotListener.
//
// Usage (by a load driver):
//   slot->pending = {window, intended_ns, tokens};
//   slot->Send(&payload.request);   // later: listener->OnComplete(slot, ...)
//
// Thread-safety: a slot carries at most one request; the driver calls Send
// only when the previous request completed (possibly from inside
// OnComplete). Cancel() and Shutdown() may be called from any thread.
#ifndef ATTNSERVE_CLIENT_LOADGEN_SLOT_H_
#define ATTNSERVE_CLIENT_LOADGEN_SLOT_H_

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "attn/v1/attention.grpc.pb.h"
#include "client/loadgen/window.h"

namespace attn::loadgen {

// Monotonic clock, ns.
int64_t SteadyNowNs();

class Slot;

class SlotListener {
 public:
  virtual ~SlotListener() = default;
  // `outcome` has code and server timing; latency and tokens are the
  // driver's to fill. Runs on a gRPC thread: must not block.
  virtual void OnComplete(Slot* slot, CallOutcome outcome) = 0;
};

class Slot {
 public:
  // Set by the driver before Send; read back in OnComplete.
  struct Pending {
    std::shared_ptr<Window> window;
    int64_t start_ns = 0;  // intended (open loop) or actual send time
    int64_t tokens = 0;
  };

  virtual ~Slot() = default;

  // Sends `request` (kept alive by the caller until completion).
  virtual void Send(const v1::AttendRequest* request) = 0;
  // False once a stream slot's stream ended: do not Send on it.
  virtual bool Alive() const { return true; }
  // Cancels the outstanding request, if any (it completes as CANCELLED).
  virtual void Cancel() = 0;
  // Stream slots: half-close the stream; WaitDone() then waits for its end.
  virtual void Shutdown() {}
  virtual bool WaitDone(absl::Time deadline) { return true; }

  Pending pending;
  std::mt19937_64 rng;  // the driver's per-slot payload choice
};

// REQUIRES: stub and listener outlive the slot. deadline 0 = none.
std::unique_ptr<Slot> MakeUnarySlot(v1::AttentionService::Stub* stub,
                                    SlotListener* listener,
                                    absl::Duration deadline);
// Opens the stream at once.
std::unique_ptr<Slot> MakeStreamSlot(v1::AttentionService::Stub* stub,
                                     SlotListener* listener);

// Replaces `*context` (guarded by `mu`) with a fresh one carrying
// `deadline` (0 = none) and returns it; the previous one, whose call has
// completed, is destroyed.
grpc::ClientContext* FreshContext(absl::Mutex* mu,
                                  std::unique_ptr<grpc::ClientContext>* context,
                                  absl::Duration deadline);

// Ends every slot: half-closes streams and waits for them (a slot still
// running after 10 s is cancelled, then waited for).
void ShutdownSlots(const std::vector<std::unique_ptr<Slot>>& slots);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_SLOT_H_
