// The report writers: JSON keys and types of every step (the documented
// schema), CSV rows, HTML self-containment; stability windows; --sweep.
#include "client/loadgen/report.h"

#include <string>
#include <vector>

#include "client/loadgen/options.h"
#include "client/loadgen/stability.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace attn::loadgen {
namespace {

WindowResult MakeWindow(int64_t ok, int64_t not_found, int64_t latency_ns,
                        absl::Duration duration) {
  WindowResult w;
  w.windows = 1;
  w.sent = ok + not_found;
  w.ok = ok;
  w.errors = not_found;
  w.late_sends = 1;
  w.tokens_ok = 16 * ok;
  w.status_counts[0] = ok;
  w.status_counts[5] = not_found;
  for (int64_t i = 0; i < ok; ++i) w.latency_ns.Record(latency_ns + i);
  w.sum_queue_us = 10 * ok;
  w.sum_compute_us = 100 * ok;
  w.sum_batch_requests = ok;
  w.duration = duration;
  return w;
}

Report MakeReport(const Options& options) {
  Report report;
  report.options = &options;
  report.d_model = 256;
  report.started_at = "2024-01-01T00:00:00Z";
  for (int c : {1, 2}) {
    StepResult s;
    s.level = {false, c, 0};
    s.result = MakeWindow(100 * c, 3, 1'000'000, absl::Seconds(2));
    s.windows_run = 3;
    s.stable = true;
    report.steps.push_back(s);
  }
  return report;
}

TEST(ReportTest, JsonHasTheDocumentedKeysAtEachStep) {
  Options options;
  const nlohmann::json doc =
      nlohmann::json::parse(JsonText(MakeReport(options)));
  EXPECT_EQ(doc["tool"], "attn_loadgen");
  EXPECT_EQ(doc["schema_version"], kJsonSchemaVersion);
  ASSERT_TRUE(doc["config"].is_object());
  EXPECT_EQ(doc["config"]["model"], "demo");
  EXPECT_EQ(doc["config"]["d_model"], 256);
  ASSERT_EQ(doc["steps"].size(), 2u);
  for (const auto& step : doc["steps"]) {
    for (const char* key : {"requests_per_second", "tokens_per_second",
                            "late_send_share", "duration_s"}) {
      EXPECT_TRUE(step[key].is_number()) << key;
    }
    for (const char* key : {"sent", "ok", "errors", "late_sends", "windows"}) {
      EXPECT_TRUE(step[key].is_number_integer()) << key;
    }
    for (const char* key :
         {"min", "mean", "p50", "p90", "p95", "p99", "p999", "max"}) {
      EXPECT_TRUE(step["latency_us"][key].is_number()) << key;
    }
    ASSERT_TRUE(step["status_counts"].is_object());
    EXPECT_EQ(step["status_counts"]["NOT_FOUND"], 3);
    EXPECT_EQ(step["sent"].get<int64_t>(),
              step["ok"].get<int64_t>() + step["errors"].get<int64_t>());
    EXPECT_EQ(step["mode"], "closed_loop");
    EXPECT_TRUE(step["server_timing_us"]["compute_mean"].is_number());
    EXPECT_TRUE(step["latency_percentiles_us"].is_array());
  }
  const auto& s0 = doc["steps"][0];
  EXPECT_DOUBLE_EQ(s0["requests_per_second"].get<double>(), 50.0);
  EXPECT_DOUBLE_EQ(s0["tokens_per_second"].get<double>(), 800.0);
  // 1 ms + up to 99 ns, within the histogram's error.
  EXPECT_NEAR(s0["latency_us"]["p50"].get<double>(), 1000.0, 10.0);
  EXPECT_NEAR(s0["server_timing_us"]["compute_mean"].get<double>(), 100.0,
              1e-9);
}

TEST(ReportTest, CsvHasAHeaderAndOneRowPerStep) {
  Options options;
  const std::string csv = CsvText(MakeReport(options));
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = csv.find('\n', start)) != std::string::npos;
       start = end + 1) {
    lines.push_back(csv.substr(start, end - start));
  }
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].rfind("label,mode,concurrency", 0), 0u);
  EXPECT_EQ(lines[1].rfind("concurrency=1,closed_loop,1,", 0), 0u) << lines[1];
  EXPECT_NE(lines[2].find("OK=200;NOT_FOUND=3"), std::string::npos);
}

TEST(ReportTest, HtmlIsSelfContainedWithTwoCharts) {
  Options options;
  const std::string html = HtmlText(MakeReport(options));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  // The only URLs are the SVG namespace names (not fetched).
  size_t urls = 0, namespaces = 0;
  for (size_t p = 0; (p = html.find("http", p)) != std::string::npos; ++p) {
    ++urls;
  }
  const std::string ns = "xmlns=\"http://www.w3.org/2000/svg\"";
  for (size_t p = 0; (p = html.find(ns, p)) != std::string::npos; ++p) {
    ++namespaces;
  }
  EXPECT_EQ(urls, namespaces);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("@font-face"), std::string::npos);
  size_t svgs = 0;
  for (size_t p = 0; (p = html.find("<svg", p)) != std::string::npos; ++p) {
    ++svgs;
  }
  EXPECT_EQ(svgs, 2u);
  EXPECT_NE(html.find("concurrency=2"), std::string::npos);
}

TEST(ReportTest, TableListsEveryStep) {
  Options options;
  const std::string table = TableText(MakeReport(options));
  EXPECT_NE(table.find("concurrency=1"), std::string::npos);
  EXPECT_NE(table.find("concurrency=2"), std::string::npos);
  EXPECT_NE(table.find("NOT_FOUND=3"), std::string::npos);
}

TEST(StabilityTest, NeedsKWindowsWithinTolerance) {
  std::vector<WindowResult> w;
  w.push_back(MakeWindow(100, 0, 1'000'000, absl::Seconds(1)));
  EXPECT_TRUE(WindowsStable(w, 1, 10));
  EXPECT_FALSE(WindowsStable(w, 3, 10));
  w.push_back(MakeWindow(150, 0, 1'000'000, absl::Seconds(1)));  // +50%
  w.push_back(MakeWindow(100, 0, 1'000'000, absl::Seconds(1)));
  EXPECT_FALSE(WindowsStable(w, 3, 10));
  w.push_back(MakeWindow(104, 0, 1'000'000, absl::Seconds(1)));
  w.push_back(MakeWindow(98, 0, 1'000'000, absl::Seconds(1)));
  EXPECT_TRUE(WindowsStable(w, 3, 10));
  w.push_back(MakeWindow(100, 0, 3'000'000, absl::Seconds(1)));  // p99 x3
  EXPECT_FALSE(WindowsStable(w, 3, 10));
  const WindowResult merged = MergeLast(w, 3);
  EXPECT_EQ(merged.windows, 3);
  EXPECT_EQ(merged.ok, 104 + 98 + 100);
  EXPECT_EQ(merged.duration, absl::Seconds(3));
}

TEST(OptionsTest, SweepParsingAndLevels) {
  auto sweep = SweepSpec::Parse("concurrency=1,2,64");
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  Options o;
  o.sweep = *sweep;
  ASSERT_TRUE(o.Validate().ok());
  const std::vector<LoadLevel> levels = o.Levels();
  ASSERT_EQ(levels.size(), 3u);
  EXPECT_EQ(levels[2].concurrency, 64);
  EXPECT_EQ(levels[2].Label(), "concurrency=64");
  EXPECT_EQ(o.EffectiveStableWindows(), 3);
  auto rate = SweepSpec::Parse("rate=100,250.5");
  ASSERT_TRUE(rate.ok());
  o.sweep = *rate;
  EXPECT_TRUE(o.Levels()[1].open_loop);
  EXPECT_EQ(o.Levels()[1].rate, 250.5);
  for (const char* bad : {"threads=1", "concurrency=", "concurrency=1.5",
                          "rate=-1", "concurrency=1,,2"}) {
    EXPECT_FALSE(SweepSpec::Parse(bad).ok()) << bad;
  }
}

TEST(OptionsTest, StreamModeRejectsDeadline) {
  Options o;
  o.rpc = RpcKind::kStream;
  o.deadline = absl::Milliseconds(5);
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attn::loadgen
