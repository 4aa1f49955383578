// compare_schedules: generate, simulate and summarize each applicable kind.
#include "schedule/planner.h"

#include <spdlog/fmt/fmt.h>

#include "schedule/generators.h"
#include "schedule/simulator.h"

namespace tandem::schedule {

std::vector<CompareRow> compare_schedules(int num_ranks, int num_microbatches, int num_chunks,
                                          const CostModelFactory& costs) {
  std::vector<CompareRow> rows;
  for (ScheduleKind kind : kAllScheduleKinds) {
    const bool interleaved = kind == ScheduleKind::kInterleaved;
    if (interleaved && num_chunks < 2) continue;
    const int v = interleaved ? num_chunks : 0;
    if (precondition_violation(kind, num_ranks, num_microbatches, v)) continue;
    const Schedule schedule = generate(kind, num_ranks, num_microbatches, v);
    const SimResult result = simulate(schedule, costs(schedule));
    CompareRow row;
    row.kind = kind;
    row.num_microbatches = num_microbatches;
    row.num_chunks = schedule.num_chunks;
    row.num_stages = schedule.num_stages;
    row.makespan = result.makespan;
    row.max_bubble = result.max_bubble();
    row.bubble_fraction = result.bubble_fraction();
    row.peak_live_chunks = result.max_peak_live_chunks();
    row.param_chunks = schedule.num_chunks;
    const double stage_units = static_cast<double>(num_ranks) / schedule.num_stages;
    row.param_units = row.param_chunks * stage_units;
    row.activation_units = row.peak_live_chunks * stage_units;
    rows.push_back(row);
  }
  return rows;
}

CostModelFactory work_cost_factory(const StageWork& whole_model, const HardwareSpec& hardware,
                                   const StageWork& first_stage_extra, const StageWork& last_stage_extra) {
  return [=](const Schedule& schedule) {
    const std::vector<StageWork> stages =
        split_work_evenly(whole_model, schedule.num_stages, first_stage_extra, last_stage_extra);
    return cost_model_from_work(stages, hardware);
  };
}

std::string render_compare_table(std::span<const CompareRow> rows) {
  std::string out = fmt::format("{:<12} {:>6} {:>6} {:>12} {:>12} {:>8} {:>9} {:>8} {:>9} {:>8}\n", "schedule", "M",
                                "v", "makespan", "max_bubble", "bubble%", "act_peak", "act_x", "params", "param_x");
  for (const CompareRow& r : rows) {
    out += fmt::format("{:<12} {:>6} {:>6} {:>12.6g} {:>12.6g} {:>7.2f}% {:>9} {:>8.3g} {:>9} {:>8.3g}\n",
                       schedule_kind_name(r.kind), r.num_microbatches, r.num_chunks, r.makespan, r.max_bubble,
                       100.0 * r.bubble_fraction, r.peak_live_chunks, r.activation_units, r.param_chunks,
                       r.param_units);
  }
  return out;
}

}  // namespace tandem::schedule
