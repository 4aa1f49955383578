// Side-by-side comparison of schedules: simulates every schedule kind that accepts (P, M, v)
// under a cost model built per schedule (stage counts differ: dualpipev has 2P stages,
// interleaved v*P), and returns one row per kind. `tandem simulate` and `tandem plan` are thin
// wrappers: they turn a job's model and hardware numbers into a CostModelFactory and print or
// rank these rows.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "schedule/cost_model.h"
#include "schedule/ir.h"

namespace tandem::schedule {

struct CompareRow {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int num_microbatches = 0;
  int num_chunks = 0;  // stages per rank
  int num_stages = 0;
  double makespan = 0;
  double max_bubble = 0;
  double bubble_fraction = 0;  // sum of bubbles / (P * makespan)
  int peak_live_chunks = 0;    // worst rank
  int param_chunks = 0;        // stages held per rank
  // The same two in units of one 1F1B stage (1/P of the model), comparable across kinds:
  // parameters 1 for 1F1B and 2 for DualPipe; activations P for 1F1B, P+1 for DualPipe.
  double param_units = 0;
  double activation_units = 0;
};

// Builds the cost model of one generated schedule (it may look at num_stages and placement).
using CostModelFactory = std::function<CostModel(const Schedule&)>;

// Every kind whose preconditions hold for (P, M, v), in kAllScheduleKinds order; interleaved only
// when v >= 2 (v is ignored by the other kinds). Throws what the factory or simulator throws.
std::vector<CompareRow> compare_schedules(int num_ranks, int num_microbatches, int num_chunks,
                                          const CostModelFactory& costs);

// A factory that splits a whole model's work evenly over each schedule's stages (with the
// embedding and head extras on the first and last stage) and prices it with cost_model_from_work.
CostModelFactory work_cost_factory(const StageWork& whole_model, const HardwareSpec& hardware,
                                   const StageWork& first_stage_extra = {}, const StageWork& last_stage_extra = {});

// Fixed-width text table of the rows.
std::string render_compare_table(std::span<const CompareRow> rows);

}  // namespace tandem::schedule
