// The simulator: plays a schedule under a CostModel (play.h) and summarizes the timeline into
// makespan, per-rank busy time, bubble, peak live activations and parameter chunks. summarize()
// takes any timeline of the same shape, so a measured run (the executor's) is reported, drawn and
// compared exactly like a simulated one.
#pragma once

#include <vector>

#include "schedule/cost_model.h"
#include "schedule/ir.h"
#include "schedule/play.h"

namespace tandem::schedule {

struct RankStats {
  int rank = 0;
  double busy = 0;             // sum of this rank's op durations
  double bubble = 0;           // makespan - busy
  double bubble_fraction = 0;  // bubble / makespan
  // Most (micro-batch, chunk) activations held at once: live from the F until the last backward
  // piece (BW, or the W of a B). In a pair the forward's activation counts before the backward's
  // is released, as both are resident while the pair runs.
  int peak_live_chunks = 0;
  int param_chunks = 0;  // stages this rank holds
  std::size_t num_ops = 0;
};

struct SimResult {
  double origin = 0;    // earliest op start (0 for a simulation); renderers draw from here
  double makespan = 0;  // latest op end - origin
  std::vector<RankStats> ranks;
  Timeline timeline;  // timeline.ranks[r][i] for schedule.ranks[r][i]

  double max_bubble() const;
  int max_peak_live_chunks() const;
  // Idle share of the whole pipeline: sum of bubbles / (num_ranks * makespan).
  double bubble_fraction() const;
};

// Plays `schedule` under `costs`. Precondition: validate(schedule) passed; a deadlock or an op out
// of range throws tandem::Error(kInput). O(ops).
SimResult simulate(const Schedule& schedule, const CostModel& costs = CostModel());

// Statistics of a timeline of the same shape as `schedule` (e.g. measured by the executor).
// Throws tandem::Error(kInput) when the shapes differ or an op ends before it starts.
SimResult summarize(const Schedule& schedule, Timeline timeline);

}  // namespace tandem::schedule
