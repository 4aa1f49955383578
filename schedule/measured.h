// Measured timelines: what the pipeline executor records for one step on one pipeline rank, its
// JSON form (one file per rank, written by `tandem train` for logging.trace_steps), assembling
// the files of one step back into a Schedule + Timeline that summarize() and the renderers take
// like a simulated one, and the comparison `tandem simulate --measured` and the trainer draw:
// the measured run next to the same schedule simulated with the measured per-op times as its cost
// model, each with its bubble fraction. Pure C++ (no LibTorch, no MPI) like the rest of the core.
//
// File format (times in ms; any common origin, e.g. the host's monotonic clock):
//   {"format": "tandem-timeline", "kind": "dualpipe", "num_ranks": 4, "num_microbatches": 8,
//    "num_chunks": 2, "step": 5, "pp_rank": 0, "dp_rank": 0, "tp_rank": 0,
//    "ops": [{"token": "F0", "start": 10.5, "end": 11.25}, ...]}
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "schedule/cost_model.h"
#include "schedule/ir.h"
#include "schedule/play.h"
#include "schedule/simulator.h"

namespace tandem::schedule {

struct RankTimeline {
  ScheduleKind kind = ScheduleKind::k1F1B;
  int num_ranks = 1;
  int num_microbatches = 1;
  int num_chunks = 1;
  int64_t step = 0;
  int pp_rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  std::vector<Op> ops;        // as run, in order
  std::vector<OpTime> times;  // [op], ms
};

std::string rank_timeline_to_json(const RankTimeline& timeline);
// Throws tandem::Error(kInput) naming the bad field or token.
RankTimeline rank_timeline_from_json(std::string_view text);

// One step of one pipeline (one timeline per pp rank), times shifted so the earliest op starts at
// 0. Throws tandem::Error(kInput) when the timelines disagree on the shape or step, a pp rank is
// missing or given twice, or the ops do not form a valid schedule of that shape.
struct MeasuredStep {
  Schedule schedule;
  Timeline timeline;
  int64_t step = 0;
};
MeasuredStep assemble_measured_step(std::span<const RankTimeline> ranks);

// One sample per op (its duration, its rank and the chunk of its first piece), for
// cost_model_from_samples.
std::vector<OpSample> op_samples(const Schedule& schedule, const Timeline& timeline);

// The measured step summarised, the same schedule simulated under the measured per-op times
// (averaged per rank, chunk and kind; zero p2p latency), and both drawn side by side.
struct MeasuredComparison {
  SimResult measured;
  SimResult simulated;
  CostModel costs;
  std::string table;   // per rank: measured busy / bubble fraction vs simulated
  std::string chrome;  // Chrome trace, two groups of tracks
  std::string svg;     // two stacked timelines on one time scale
};
MeasuredComparison compare_measured(const MeasuredStep& measured);

}  // namespace tandem::schedule
