#include "client/loadgen/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace attn::loadgen {
namespace {

// A "nice" tick step (1, 2 or 5 times a power of ten) for ~5 ticks.
double NiceStep(double range) {
  if (!(range > 0)) return 1;
  const double raw = range / 5;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (raw <= m * p) return m * p;
  }
  return 10 * p;
}

std::string Num(double v) {
  if (v == 0) return "0";
  if (std::fabs(v) >= 1000) return absl::StrFormat("%.0f", v);
  if (std::fabs(v) >= 10) return absl::StrFormat("%.4g", v);
  return absl::StrFormat("%.3g", v);
}

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string SvgLineChart(const ChartSpec& spec) {
  const double left = 70, right = 170, top = 40, bottom = 55;
  const double pw = spec.width - left - right;
  const double ph = spec.height - top - bottom;
  double x0 = std::numeric_limits<double>::max(), x1 = -x0;
  double y1 = 0;
  for (const ChartSeries& s : spec.series) {
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y1 = std::max(y1, y);
    }
  }
  for (const ChartTick& t : spec.x_ticks) {
    x0 = std::min(x0, t.value);
    x1 = std::max(x1, t.value);
  }
  if (x0 > x1) x0 = 0, x1 = 1;
  if (x0 == x1) x0 -= 0.5, x1 += 0.5;
  const double ystep = NiceStep(y1 > 0 ? y1 : 1);
  y1 = std::ceil((y1 > 0 ? y1 : 1) / ystep) * ystep;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + ph - y / y1 * ph; };

  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n"
      "<text x=\"%g\" y=\"22\" font-size=\"15\" "
      "font-weight=\"bold\">%s</text>\n",
      spec.width, spec.height, spec.width, spec.height, left,
      HtmlEscape(spec.title));
  // Grid and y ticks.
  for (double y = 0; y <= y1 + ystep / 2; y += ystep) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#dddddd\"/>"
        "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
        left, Y(y), left + pw, Y(y), left - 6, Y(y) + 4, Num(y));
  }
  // x ticks.
  std::vector<ChartTick> xt = spec.x_ticks;
  if (xt.empty()) {
    const double step = NiceStep(x1 - x0);
    for (double x = std::ceil(x0 / step) * step; x <= x1 + step / 1e6;
         x += step) {
      xt.push_back({x, Num(x)});
    }
  }
  for (const ChartTick& t : xt) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#eeeeee\"/>"
        "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n",
        X(t.value), top, X(t.value), top + ph, X(t.value), top + ph + 18,
        HtmlEscape(t.label));
  }
  // Axes and labels.
  absl::StrAppendFormat(
      &svg,
      "<path d=\"M%g %g V%g H%g\" fill=\"none\" stroke=\"#333333\"/>\n"
      "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n"
      "<text transform=\"translate(16 %g) rotate(-90)\" "
      "text-anchor=\"middle\">%s</text>\n",
      left, top, top + ph, left + pw, left + pw / 2, top + ph + 40,
      HtmlEscape(spec.x_label), top + ph / 2, HtmlEscape(spec.y_label));
  // Series and legend.
  int row = 0;
  for (const ChartSeries& s : spec.series) {
    std::string pts;
    for (const auto& [x, y] : s.points) {
      absl::StrAppendFormat(&pts, "%.1f,%.1f ", X(x), Y(y));
    }
    absl::StrAppendFormat(&svg,
                          "<polyline points=\"%s\" fill=\"none\" "
                          "stroke=\"%s\" stroke-width=\"2\"/>\n",
                          pts, s.color);
    for (const auto& [x, y] : s.points) {
      absl::StrAppendFormat(&svg,
                            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" "
                            "fill=\"%s\"/>\n",
                            X(x), Y(y), s.color);
    }
    const double ly = top + 10 + row++ * 20;
    absl::StrAppendFormat(
        &svg,
        "<rect x=\"%g\" y=\"%g\" width=\"14\" height=\"10\" fill=\"%s\"/>"
        "<text x=\"%g\" y=\"%g\">%s</text>\n",
        left + pw + 16, ly - 9, s.color, left + pw + 36, ly,
        HtmlEscape(s.name));
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace attn::loadgen
