// The standard process_* metrics of a Linux process, read from /proc at
// scrape time (prometheus-cpp 1.0 has no process collector):
//
//   process_cpu_seconds_total       counter  user + system CPU time
//   process_resident_memory_bytes   gauge    resident set size
//   process_virtual_memory_bytes    gauge    virtual memory size
//   process_open_fds                gauge    open file descriptors
//   process_max_fds                 gauge    RLIMIT_NOFILE soft limit
//   process_start_time_seconds      gauge    start time, seconds since epoch
//
//   auto process = std::make_shared<ProcessCollector>();
//   exposer.RegisterCollectable(process);
//
// Names, types and units are those of the Go and Python clients, so the
// usual dashboards work. A value that cannot be read (no /proc) is left out
// of the scrape rather than reported wrong.
//
// Thread-safety: Collect() may be called concurrently (it keeps no mutable
// state); `proc_root` is read-only after construction.
#ifndef ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_
#define ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_

#include <optional>
#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace attn::server {

// Figures of one process, as read from /proc.
struct ProcessStats {
  std::optional<double> cpu_seconds;
  std::optional<double> resident_bytes;
  std::optional<double> virtual_bytes;
  std::optional<double> open_fds;
  std::optional<double> max_fds;
  std::optional<double> start_time_seconds;
};

// Reads the stats of this process from `proc_root` ("/proc" normally; the
// files self/stat, self/fd/ and stat are used).
ProcessStats ReadProcessStats(const std::string& proc_root = "/proc");

class ProcessCollector final : public prometheus::Collectable {
 public:
  explicit ProcessCollector(std::string proc_root = "/proc");

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string proc_root_;
};

}  // namespace attn::server

#endif  // ATTNSERVE_SERVER_OBSERVABILITY_PROCESS_METRICS_H_
