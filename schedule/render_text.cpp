// Text renderers (ops notation, table), the format names, titles, and the output writer.
#include <fstream>

#include <spdlog/fmt/fmt.h>

#include "runtime/error.h"
#include "schedule/render.h"

namespace tandem::schedule {

OutputFormat parse_output_format(std::string_view name) {
  for (OutputFormat f :
       {OutputFormat::kOps, OutputFormat::kTable, OutputFormat::kJson, OutputFormat::kChrome, OutputFormat::kSvg}) {
    if (name == output_format_name(f)) return f;
  }
  TANDEM_THROW(kConfig, "unknown output format '{}' (known: ops, table, json, chrome, svg)", name);
}

std::string_view output_format_name(OutputFormat format) {
  switch (format) {
    case OutputFormat::kOps: return "ops";
    case OutputFormat::kTable: return "table";
    case OutputFormat::kJson: return "json";
    case OutputFormat::kChrome: return "chrome";
    case OutputFormat::kSvg: return "svg";
  }
  return "?";
}

std::string default_title(const Schedule& s, const SimResult& result) {
  std::string title = fmt::format("{}  P={}  M={}", schedule_kind_name(s.kind), s.num_ranks, s.num_microbatches);
  if (s.kind == ScheduleKind::kInterleaved) title += fmt::format("  v={}", s.num_chunks);
  const double worst = result.max_bubble();
  title += fmt::format("  makespan {:.6g}  max bubble {:.6g} ({:.1f}%)  peak {} act. chunks", result.makespan, worst,
                       result.makespan > 0 ? 100.0 * worst / result.makespan : 0.0, result.max_peak_live_chunks());
  return title;
}

std::string render_ops(const Schedule& s) {
  const bool chunk = shows_chunk(s.kind);
  std::string out;
  out.reserve(s.num_ops() * 7);
  for (std::size_t r = 0; r < s.ranks.size(); ++r) {
    out += std::to_string(r);
    out += ':';
    for (const Op& op : s.ranks[r]) {
      out += ' ';
      append_op(out, op, chunk);
    }
    out += '\n';
  }
  return out;
}

std::string render_table(const Schedule& s, const SimResult& result, const CostModel* costs) {
  std::string out = fmt::format("{} schedule: pp={}  micro_batches={}  chunks/rank={}  stages={}",
                                schedule_kind_name(s.kind), s.num_ranks, s.num_microbatches, s.num_chunks,
                                s.num_stages);
  if (costs != nullptr) out += "  cost " + costs->describe();
  out += '\n';
  out += fmt::format(
      "makespan {:.6g}   pipeline bubble {:.2f}%   max per-rank bubble {:.6g}   peak activations {} chunks\n\n",
      result.makespan, 100.0 * result.bubble_fraction(), result.max_bubble(), result.max_peak_live_chunks());
  out += fmt::format("{:>6} {:>12} {:>12} {:>8} {:>10} {:>7} {:>7}\n", "rank", "busy", "bubble", "bubble%", "peak_act",
                     "params", "ops");
  double busy = 0;
  double bubble = 0;
  std::size_t ops = 0;
  for (const RankStats& r : result.ranks) {
    out += fmt::format("{:>6} {:>12.6g} {:>12.6g} {:>7.2f}% {:>10} {:>7} {:>7}\n", r.rank, r.busy, r.bubble,
                       100.0 * r.bubble_fraction, r.peak_live_chunks, r.param_chunks, r.num_ops);
    busy += r.busy;
    bubble += r.bubble;
    ops += r.num_ops;
  }
  const int params = result.ranks.empty() ? 0 : result.ranks.front().param_chunks;
  out += fmt::format("{:>6} {:>12.6g} {:>12.6g} {:>7.2f}% {:>10} {:>7} {:>7}\n", "all", busy, bubble,
                     100.0 * result.bubble_fraction(), fmt::format("max {}", result.max_peak_live_chunks()), params,
                     ops);
  return out;
}

std::string render(OutputFormat format, const Schedule& schedule, const SimResult& result, const CostModel* costs) {
  switch (format) {
    case OutputFormat::kOps: return render_ops(schedule);
    case OutputFormat::kTable: return render_table(schedule, result, costs);
    case OutputFormat::kJson: return render_json(schedule, result, costs);
    case OutputFormat::kChrome: return render_chrome(schedule, result);
    case OutputFormat::kSvg: return render_svg(schedule, result);
  }
  TANDEM_THROW(kInternal, "unhandled output format {}", static_cast<int>(format));
}

void write_output(std::string_view text, const std::string& path, std::ostream& out) {
  if (path.empty()) {
    out << text;
    out.flush();
    return;
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  TANDEM_CHECK_KIND(kIo, file.good(), "cannot open '{}' for writing", path);
  file << text;
  file.close();
  TANDEM_CHECK_KIND(kIo, !file.fail(), "writing '{}' failed", path);
}

}  // namespace tandem::schedule
