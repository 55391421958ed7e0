#include "server/observability/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace attn::server {
namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Seconds since the epoch at which the machine booted (/proc/stat btime).
std::optional<double> BootTime(const std::string& proc_root) {
  std::optional<std::string> stat = ReadFile(proc_root + "/stat");
  if (!stat) return std::nullopt;
  for (absl::string_view line : absl::StrSplit(*stat, '\n')) {
    if (!absl::ConsumePrefix(&line, "btime ")) continue;
    double btime = 0;
    if (absl::SimpleAtod(line, &btime)) return btime;
  }
  return std::nullopt;
}

std::optional<double> CountOpenFds(const std::string& proc_root) {
  DIR* dir = opendir((proc_root + "/self/fd").c_str());
  if (dir == nullptr) return std::nullopt;
  // The descriptor opendir() holds is listed too: it is not counted.
  const std::string own = std::to_string(dirfd(dir));
  double count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.' && own != entry->d_name) ++count;
  }
  closedir(dir);
  return count;
}

prometheus::MetricFamily Family(const char* name, const char* help,
                                prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

}  // namespace

ProcessStats ReadProcessStats(const std::string& proc_root) {
  ProcessStats stats;
  stats.open_fds = CountOpenFds(proc_root);
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur != RLIM_INFINITY) {
    stats.max_fds = static_cast<double>(limit.rlim_cur);
  }

  // /proc/self/stat: "pid (comm) state ppid ...": comm may hold spaces and
  // parentheses, so fields are counted from the last ')'. After it, field
  // 3 (state) is index 0: utime(14) -> 11, stime(15) -> 12,
  // starttime(22) -> 19, vsize(23) -> 20, rss(24) -> 21.
  std::optional<std::string> stat = ReadFile(proc_root + "/self/stat");
  if (!stat) return stats;
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return stats;
  std::vector<absl::string_view> fields = absl::StrSplit(
      absl::string_view(*stat).substr(close + 1), ' ', absl::SkipWhitespace());
  if (fields.size() < 22) return stats;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  double utime, stime, start, vsize, rss;
  if (ticks > 0 && absl::SimpleAtod(fields[11], &utime) &&
      absl::SimpleAtod(fields[12], &stime)) {
    stats.cpu_seconds = (utime + stime) / ticks;
  }
  if (absl::SimpleAtod(fields[20], &vsize)) stats.virtual_bytes = vsize;
  if (page > 0 && absl::SimpleAtod(fields[21], &rss)) {
    stats.resident_bytes = rss * page;
  }
  std::optional<double> boot = BootTime(proc_root);
  if (boot && ticks > 0 && absl::SimpleAtod(fields[19], &start)) {
    stats.start_time_seconds = *boot + start / ticks;
  }
  return stats;
}

ProcessCollector::ProcessCollector(std::string proc_root)
    : proc_root_(std::move(proc_root)) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  const ProcessStats s = ReadProcessStats(proc_root_);
  std::vector<prometheus::MetricFamily> families;
  if (s.cpu_seconds) {
    families.push_back(Family("process_cpu_seconds_total",
                              "Total user and system CPU time spent in "
                              "seconds.",
                              MetricType::Counter, *s.cpu_seconds));
  }
  if (s.resident_bytes) {
    families.push_back(Family("process_resident_memory_bytes",
                              "Resident memory size in bytes.",
                              MetricType::Gauge, *s.resident_bytes));
  }
  if (s.virtual_bytes) {
    families.push_back(Family("process_virtual_memory_bytes",
                              "Virtual memory size in bytes.",
                              MetricType::Gauge, *s.virtual_bytes));
  }
  if (s.open_fds) {
    families.push_back(Family("process_open_fds",
                              "Number of open file descriptors.",
                              MetricType::Gauge, *s.open_fds));
  }
  if (s.max_fds) {
    families.push_back(Family("process_max_fds",
                              "Maximum number of open file descriptors.",
                              MetricType::Gauge, *s.max_fds));
  }
  if (s.start_time_seconds) {
    families.push_back(Family("process_start_time_seconds",
                              "Start time of the process since unix epoch in "
                              "seconds.",
                              MetricType::Gauge, *s.start_time_seconds));
  }
  return families;
}

}  // namespace attn::server
