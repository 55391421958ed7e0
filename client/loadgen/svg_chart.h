// SvgLineChart: a small inline-SVG line chart (axes, ticks, grid, legend,
// one polyline with markers per series) for the HTML report. No scripts,
// no external fonts: the output renders in any browser as is.
//
// Pure function; thread-safe.
#ifndef ATTNSERVE_CLIENT_LOADGEN_SVG_CHART_H_
#define ATTNSERVE_CLIENT_LOADGEN_SVG_CHART_H_

#include <string>
#include <utility>
#include <vector>

namespace attn::loadgen {

struct ChartSeries {
  std::string name;
  std::string color;                              // CSS colour, e.g. "#1f77b4"
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in order
};

struct ChartTick {
  double value;
  std::string label;
};

struct ChartSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<ChartSeries> series;
  std::vector<ChartTick> x_ticks;  // empty: automatic
  int width = 760;
  int height = 380;
};

std::string SvgLineChart(const ChartSpec& spec);

// Escapes &, <, >, " for HTML/SVG text.
std::string HtmlEscape(const std::string& text);

}  // namespace attn::loadgen

#endif  // ATTNSERVE_CLIENT_LOADGEN_SVG_CHART_H_
