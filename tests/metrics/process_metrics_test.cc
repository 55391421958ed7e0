// ProcessCollector / ReadProcessStats on a fake /proc with known contents,
// and on the real /proc.
#include "server/observability/process_metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "prometheus/metric_type.h"

namespace attn::server {
namespace {

namespace fs = std::filesystem;

class FakeProc {
 public:
  FakeProc() {
    char tmpl[] = "/tmp/attn_fake_proc_XXXXXX";
    root_ = mkdtemp(tmpl);
    fs::create_directories(root_ / "self" / "fd");
  }
  ~FakeProc() { fs::remove_all(root_); }
  void Write(const std::string& path, const std::string& text) {
    std::ofstream(root_ / path) << text;
  }
  std::string root() const { return root_.string(); }

 private:
  fs::path root_;
};

TEST(ProcessStatsTest, ReadsFakeProc) {
  FakeProc proc;
  // comm holds spaces and ')' : fields are counted from the last ')'.
  // Fields 3..24: state ppid pgrp session tty tpgid flags minflt cminflt
  // majflt cmajflt utime(14) stime(15) cutime cstime prio nice threads
  // itreal starttime(22) vsize(23) rss(24).
  proc.Write("self/stat",
             "42 (attn (x) y) S 1 42 42 0 -1 4194560 10 0 0 0 250 150 0 0 20 0 "
             "3 0 1000 4096000 100 18446744073709551615\n");
  proc.Write("stat", "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n");
  for (const char* name : {"0", "1", "2"})
    proc.Write(std::string("self/fd/") + name, "");

  const ProcessStats s = ReadProcessStats(proc.root());
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  ASSERT_TRUE(s.cpu_seconds.has_value());
  EXPECT_DOUBLE_EQ(*s.cpu_seconds, 400 / ticks);
  ASSERT_TRUE(s.start_time_seconds.has_value());
  EXPECT_DOUBLE_EQ(*s.start_time_seconds, 1700000000 + 1000 / ticks);
  ASSERT_TRUE(s.virtual_bytes.has_value());
  EXPECT_DOUBLE_EQ(*s.virtual_bytes, 4096000);
  ASSERT_TRUE(s.resident_bytes.has_value());
  EXPECT_DOUBLE_EQ(*s.resident_bytes, 100 * page);
  ASSERT_TRUE(s.open_fds.has_value());
  EXPECT_EQ(*s.open_fds, 3);
}

TEST(ProcessStatsTest, MissingOrTruncatedFilesLeaveValuesOut) {
  FakeProc proc;
  proc.Write("self/stat", "42 (x) S 1 2 3\n");  // too few fields
  const ProcessStats s = ReadProcessStats(proc.root());
  EXPECT_FALSE(s.cpu_seconds.has_value());
  EXPECT_FALSE(s.resident_bytes.has_value());
  EXPECT_FALSE(s.start_time_seconds.has_value());
  EXPECT_EQ(s.open_fds, 0);

  const ProcessStats none = ReadProcessStats(proc.root() + "/does-not-exist");
  EXPECT_FALSE(none.cpu_seconds.has_value());
  EXPECT_FALSE(none.open_fds.has_value());
  // Only what could be read is exported.
  ProcessCollector collector(proc.root() + "/does-not-exist");
  for (const auto& family : collector.Collect()) {
    EXPECT_EQ(family.name, "process_max_fds");  // from getrlimit, not /proc
  }
}

TEST(ProcessStatsTest, RealProcFollowsOpenDescriptors) {
  const ProcessStats before = ReadProcessStats();
  ASSERT_TRUE(before.open_fds.has_value());
  const int fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  const ProcessStats during = ReadProcessStats();
  close(fd);
  EXPECT_EQ(*during.open_fds, *before.open_fds + 1);
  ASSERT_TRUE(during.resident_bytes.has_value());
  EXPECT_GT(*during.resident_bytes, 0);
  ASSERT_TRUE(during.cpu_seconds.has_value());
  EXPECT_GE(*during.cpu_seconds, *before.cpu_seconds);
}

TEST(ProcessCollectorTest, StandardNamesAndTypes) {
  ProcessCollector collector;
  std::map<std::string, prometheus::MetricType> types;
  for (const auto& family : collector.Collect()) {
    EXPECT_EQ(family.metric.size(), 1u) << family.name;
    EXPECT_FALSE(family.help.empty()) << family.name;
    types[family.name] = family.type;
  }
  using prometheus::MetricType;
  EXPECT_EQ(types.at("process_cpu_seconds_total"), MetricType::Counter);
  EXPECT_EQ(types.at("process_resident_memory_bytes"), MetricType::Gauge);
  EXPECT_EQ(types.at("process_virtual_memory_bytes"), MetricType::Gauge);
  EXPECT_EQ(types.at("process_open_fds"), MetricType::Gauge);
  EXPECT_EQ(types.at("process_start_time_seconds"), MetricType::Gauge);
}

}  // namespace
}  // namespace attn::server
