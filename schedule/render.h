// Renderers of a schedule and its timeline: `ops` (docs/dualpipe.md#tokens), `table`, `json`,
// `chrome` (Chrome trace JSON that Perfetto opens, one track per rank) and `svg` (the DualPipe
// paper's style of figure). Chrome and SVG also take several runs (e.g. simulated next to
// measured) and draw them as separate groups of tracks with their titles. All return strings
// (pure functions of their inputs); write_output() sends one to a file or stream.
// Precondition everywhere: `result` came from simulate() or summarize() of the same schedule, so
// result.timeline has the schedule's shape.
#pragma once

#include <ostream>
#include <span>
#include <string>
#include <string_view>

#include "schedule/cost_model.h"
#include "schedule/ir.h"
#include "schedule/simulator.h"

namespace tandem::schedule {

enum class OutputFormat { kOps, kTable, kJson, kChrome, kSvg };

// "ops", "table", "json", "chrome", "svg"; throws tandem::Error(kConfig) naming the known ones.
OutputFormat parse_output_format(std::string_view name);
std::string_view output_format_name(OutputFormat format);

// One timeline to draw. The pointers are borrowed and must outlive the call.
struct RunView {
  std::string title;
  const Schedule* schedule = nullptr;
  const SimResult* result = nullptr;
};

// "dualpipe  P=8  M=20  makespan 66  max bubble 6 (9.1%)  peak 9 act. chunks"
std::string default_title(const Schedule& schedule, const SimResult& result);

// One line `r: tok tok ...` per rank, each ending in '\n', exactly docs/dualpipe.md#tokens.
std::string render_ops(const Schedule& schedule);

// Human-readable per-rank busy / bubble / peak activations / parameter chunks, with totals.
// `costs` (optional) is named in the header.
std::string render_table(const Schedule& schedule, const SimResult& result, const CostModel* costs = nullptr);

// {"kind", "num_ranks", "num_microbatches", "num_chunks", "num_stages", "cost", "makespan",
//  "bubble_fraction", "max_bubble", "ranks": [{"rank", "busy", "bubble", "bubble_fraction",
//  "peak_live_chunks", "param_chunks", "num_ops"}], "timeline": [{"rank", "index", "token",
//  "start", "end"}]}
std::string render_json(const Schedule& schedule, const SimResult& result, const CostModel* costs = nullptr);

// Chrome trace (JSON array): "X" events with ts/dur in microseconds (one time unit = 1 ms), one
// pid per run (named by its title), one tid per rank named "rank r".
std::string render_chrome(const Schedule& schedule, const SimResult& result);
std::string render_chrome(std::span<const RunView> runs);

// SVG: one row per rank, one cell per op coloured by kind (darker for later chunks / the
// up-flowing direction), the micro-batch number inside, overlapped pairs outlined together, a
// time axis, a legend and a title. Several runs are stacked with a shared time scale.
std::string render_svg(const Schedule& schedule, const SimResult& result, std::string_view title = {});
std::string render_svg(std::span<const RunView> runs, std::string_view title);

// Renders `format` (the CLI's --format).
std::string render(OutputFormat format, const Schedule& schedule, const SimResult& result,
                   const CostModel* costs = nullptr);

// Writes `text` to `path` (throws tandem::Error(kIo) when it cannot), or to `out` when path is
// empty.
void write_output(std::string_view text, const std::string& path, std::ostream& out);

}  // namespace tandem::schedule
