// SVG renderer in the style of the DualPipe paper's figure: one row per rank, one cell per op
// coloured by kind (darker for chunk 1 / later chunks), the micro-batch number inside when it
// fits, overlapped pairs drawn as their two halves with one outline. Each op is one
// <g class="op"> with a <title> tooltip, so tools (and tests) can count and inspect ops.
#include <algorithm>
#include <cmath>

#include <spdlog/fmt/fmt.h>

#include "schedule/render.h"

namespace tandem::schedule {

namespace {

constexpr double kLeft = 70;  // room for "rank 12"
constexpr double kRight = 24;
constexpr double kTitleH = 40;
constexpr double kGroupTitleH = 22;
constexpr double kGroupGap = 12;
constexpr double kRowH = 24;
constexpr double kRowGap = 4;
constexpr double kAxisH = 34;
constexpr double kLegendH = 34;
constexpr double kTargetPlotW = 1600;  // px for the longest run
constexpr double kMaxPxPerUnit = 24;   // a unit op is at most this wide

struct Rgb {
  double r, g, b;
};

// Light shade for chunk 0, dark for the last chunk (DualPipe: the up-flowing direction).
std::string fill_colour(OpKind kind, int chunk, int num_chunks) {
  Rgb light{}, dark{};
  switch (kind) {
    case OpKind::kF: light = {250, 215, 160}, dark = {232, 148, 58}; break;
    case OpKind::kB: light = {169, 223, 191}, dark = {72, 172, 112}; break;
    case OpKind::kW: light = {174, 214, 241}, dark = {84, 153, 214}; break;
    case OpKind::kBW: light = {245, 183, 177}, dark = {214, 96, 86}; break;
  }
  const double t = num_chunks > 1 ? static_cast<double>(chunk) / (num_chunks - 1) : 0.0;
  auto mix = [&](double a, double b) { return static_cast<int>(std::lround(a + (b - a) * t)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(light.r, dark.r), mix(light.g, dark.g), mix(light.b, dark.b));
}

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A tick step of 1, 2 or 5 times a power of ten, at least `min_px` apart.
double tick_step(double px_per_unit, double min_px) {
  const double raw = min_px / px_per_unit;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * power >= raw) return m * power;
  }
  return 10 * power;
}

// Relative widths of a pair's halves (F : B or BW), as with unit costs.
double forward_share(const Op& op) { return op.second->kind == OpKind::kBW ? 1.0 / 3.0 : 0.5; }

class SvgWriter {
 public:
  SvgWriter(double px_per_unit, double top) : px_(px_per_unit), y_(top) {}

  void run(const RunView& view, bool with_title, std::string& out) {
    const Schedule& s = *view.schedule;
    const SimResult& res = *view.result;
    if (with_title) {
      out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"13\" font-weight=\"bold\">{}</text>\n", kLeft,
                         y_ + 15, escape(view.title));
      y_ += kGroupTitleH;
    }
    const bool chunk = shows_chunk(s.kind);
    for (std::size_t r = 0; r < s.ranks.size(); ++r) {
      const double row_y = y_ + static_cast<double>(r) * (kRowH + kRowGap);
      out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"end\">rank {}</text>\n", kLeft - 8,
                         row_y + kRowH / 2 + 4, r);
      out += fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{}\" fill=\"#f4f4f4\"/>\n", kLeft,
                         row_y, res.makespan * px_, kRowH);
      for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
        draw_op(s, res, r, i, row_y, chunk, out);
      }
    }
    y_ += static_cast<double>(s.ranks.size()) * (kRowH + kRowGap) + kGroupGap;
  }

 private:
  void draw_piece(const Piece& p, int num_chunks, double x, double w, double row_y, std::string& out) const {
    out += fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{}\" fill=\"{}\" stroke=\"#ffffff\" "
                       "stroke-width=\"0.6\"/>",
                       x, row_y, w, kRowH, fill_colour(p.kind, p.chunk, num_chunks));
    const std::string label = std::to_string(p.mb);
    if (w >= 6.5 * static_cast<double>(label.size()) + 3) {
      out += fmt::format("<text x=\"{:.2f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>", x + w / 2,
                         row_y + kRowH / 2 + 4, label);
    }
  }

  void draw_op(const Schedule& s, const SimResult& res, std::size_t r, std::size_t i, double row_y, bool chunk,
               std::string& out) const {
    const Op& op = s.ranks[r][i];
    const OpTime& t = res.timeline.ranks[r][i];
    const double x = kLeft + (t.start - res.origin) * px_;
    const double w = std::max(0.0, (t.end - t.start) * px_);
    out += fmt::format("<g class=\"op\"><title>rank {} op {}: {} [{:.6g}, {:.6g}]</title>", r, i, format_op(op, chunk),
                       t.start - res.origin, t.end - res.origin);
    if (!op.second) {
      draw_piece(op.first, s.num_chunks, x, w, row_y, out);
    } else {
      const double wf = w * forward_share(op);
      draw_piece(op.first, s.num_chunks, x, wf, row_y, out);
      draw_piece(*op.second, s.num_chunks, x + wf, w - wf, row_y, out);
      out +=
          fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{}\" fill=\"none\" stroke=\"#222222\" "
                      "stroke-width=\"1.6\"/>",
                      x + 0.8, row_y + 0.8, std::max(0.0, w - 1.6), kRowH - 1.6);
    }
    out += "</g>\n";
  }

  double px_;
  double y_;
};

// Faint vertical lines at the ticks, drawn first so ops cover them.
void draw_grid(double span, double px, double top, double bottom, std::string& out) {
  const double step = tick_step(px, 60);
  for (double t = 0; t <= span + 1e-9; t += step) {
    out += fmt::format(
        "<line x1=\"{0:.2f}\" y1=\"{1:.1f}\" x2=\"{0:.2f}\" y2=\"{2:.1f}\" stroke=\"#dddddd\" stroke-width=\"0.6\"/>\n",
        kLeft + t * px, top, bottom);
  }
}

void draw_axis(double span, double px, double y, std::string& out) {
  const double step = tick_step(px, 60);
  out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#444\"/>\n", kLeft, y,
                     kLeft + span * px, y);
  for (double t = 0; t <= span + 1e-9; t += step) {
    out += fmt::format("<line x1=\"{0:.2f}\" y1=\"{1:.1f}\" x2=\"{0:.2f}\" y2=\"{2:.1f}\" stroke=\"#444\"/>"
                       "<text x=\"{0:.2f}\" y=\"{3:.1f}\" font-size=\"11\" text-anchor=\"middle\">{4:.6g}</text>\n",
                       kLeft + t * px, y, y + 5, y + 17, t);
  }
  out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">time</text>\n",
                     kLeft + span * px, y + 30);
}

// Returns the x where the legend ends (text widths estimated at 6.2 px per character).
double draw_legend(ScheduleKind kind, double y, std::string& out) {
  double x = kLeft;
  auto swatch = [&](OpKind k, std::string_view label) {
    out += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"18\" height=\"14\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{:.1f}\" "
        "font-size=\"11\">{}</text>\n",
        x, y, fill_colour(k, 0, 1), x + 23, y + 11, label);
    x += 28 + 6.2 * static_cast<double>(label.size());
  };
  swatch(OpKind::kF, "F forward");
  swatch(OpKind::kB, "B input-grad backward");
  swatch(OpKind::kW, "W weight-grad");
  swatch(OpKind::kBW, "BW full backward");
  out += fmt::format(
      "<rect x=\"{0:.1f}\" y=\"{1:.1f}\" width=\"12\" height=\"14\" fill=\"{2}\"/><rect x=\"{3:.1f}\" y=\"{1:.1f}\" "
      "width=\"18\" height=\"14\" fill=\"{4}\"/><rect x=\"{0:.1f}\" y=\"{1:.1f}\" width=\"30\" height=\"14\" "
      "fill=\"none\" stroke=\"#222222\" stroke-width=\"1.6\"/><text x=\"{5:.1f}\" y=\"{6:.1f}\" font-size=\"11\">"
      "F+BW overlapped pair</text>\n",
      x, y, fill_colour(OpKind::kF, 0, 1), x + 12, fill_colour(OpKind::kBW, 0, 1), x + 35, y + 11);
  x += 35 + 6.2 * 20 + 10;
  std::string_view shade;
  if (kind == ScheduleKind::kDualPipe) shade = "darker: micro-batches flowing up (chunk 1)";
  if (kind == ScheduleKind::kDualPipeV) shade = "darker: chunk 1 (the way back up)";
  if (kind == ScheduleKind::kInterleaved) shade = "darker: later chunks";
  if (!shade.empty()) {
    out += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" fill=\"#555\">{}</text>\n", x, y + 11, shade);
    x += 6.2 * static_cast<double>(shade.size());
  }
  return x;
}

}  // namespace

std::string render_svg(const Schedule& schedule, const SimResult& result, std::string_view title) {
  const RunView run{std::string(), &schedule, &result};
  const std::string heading = title.empty() ? default_title(schedule, result) : std::string(title);
  return render_svg(std::span<const RunView>(&run, 1), heading);
}

std::string render_svg(std::span<const RunView> runs, std::string_view title) {
  double span = 0;
  double rows = 0;
  for (const RunView& run : runs) {
    span = std::max(span, run.result->makespan);
    rows += static_cast<double>(run.schedule->ranks.size());
  }
  if (span <= 0) span = 1;
  const double px = std::min(kMaxPxPerUnit, kTargetPlotW / span);
  const bool groups = runs.size() > 1;
  const double plot_h = rows * (kRowH + kRowGap) + static_cast<double>(runs.size()) * kGroupGap +
                        (groups ? static_cast<double>(runs.size()) * kGroupTitleH : 0);
  const double axis_y = kTitleH + plot_h - kGroupGap + 4;
  std::string legend;
  const double legend_end =
      draw_legend(runs.empty() ? ScheduleKind::k1F1B : runs.front().schedule->kind, axis_y + kAxisH + 4, legend);
  const double title_end = kLeft + 8.5 * static_cast<double>(title.size());
  const double width = std::max({kLeft + span * px + kRight, legend_end + kRight, title_end + kRight});
  const double height = kTitleH + plot_h + kAxisH + kLegendH;

  std::string out;
  out += fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0:.0f}\" height=\"{1:.0f}\" viewBox=\"0 0 {0:.0f} {1:.0f}\" "
      "font-family=\"Helvetica, Arial, sans-serif\">\n",
      width, height);
  out += "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  out += fmt::format("<text x=\"{}\" y=\"26\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", kLeft, escape(title));
  draw_grid(span, px, kTitleH, axis_y, out);
  SvgWriter writer(px, kTitleH);
  for (const RunView& run : runs) writer.run(run, groups, out);
  draw_axis(span, px, axis_y, out);
  out += legend;
  out += "</svg>\n";
  return out;
}

}  // namespace tandem::schedule
