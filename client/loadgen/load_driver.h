// LoadDriver: generates the load of one LoadLevel against the server and
// records every request in a Recorder.
//
//   closed loop  `concurrency` slots, each sending its next request as soon
//                as the previous one completes; latency from the actual send.
//   open loop    a scheduler thread sends at the times of an
//                ArrivalSchedule fixed in advance, on any idle slot (slots
//                are created on demand up to --max_inflight); latency from
//                the *intended* send time, and sends issued more than
//                --late_threshold after it are counted as late.
//
// Usage:
//   auto driver = MakeLoadDriver(level, options, &connections, payloads,
//                                &recorder);
//   driver->Start();  ...  driver->Stop();
//
// Start and Stop are called once each, from one thread. Everything passed
// in must outlive the driver.
#ifndef ATTNSERVE_CLIENT_LOADGEN_LOAD_DRIVER_H_
#define ATTNSERVE_CLIENT_LOADGEN_LOAD_DRIVER_H_

#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "client/loadgen/channels.h"
#include "client/loadgen/options.h"
#include "client/loadgen/payloads.h"
#include "client/loadgen/recorder.h"
#include "client/loadgen/slot.h"

namespace attn::loadgen {

class LoadDriver {
 public:
  virtual ~LoadDriver() = default;
  virtual void Start() = 0;
  // Stops sending and stops the recorder, waits up to `drain` for the
  // outstanding requests, then cancels the rest (they complete as
  // CANCELLED) and closes the streams. Every recorded send is completed
  // when Stop returns.
  virtual void Stop(absl::Duration drain) = 0;
};

std::unique_ptr<LoadDriver> MakeLoadDriver(const LoadLevel& level,
                                           const Options& options,
                                           std::vector<Connection>* connections,
                                           const PayloadSet& payloads,
                                           Recorder* recorder);

// Internal: the two kinds of driver (MakeLoadDriver picks one).
std::unique_ptr<LoadDriver> MakeClosedLoopDriver(
    int concurrency, const Options& options,
    std::vector<Connection>* connections, const PayloadSet& payloads,
    Recorder* recorder);
std::unique_ptr<LoadDriver> MakeOpenLoopDriver(
    double rate, const Options& options, std::vector<Connection>* connections,
    const PayloadSet& payloads, Recorder* recorder);

// Internal: the slot of index `i` (channel i mod connections).
std::unique_ptr<Slot> NewSlot(const Options& options,
                              std::vector<Connection>* connections, int i,
                              SlotListener* listener);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_LOAD_DRIVER_H_
