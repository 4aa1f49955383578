// The in-order execution engine shared by the validator (deadlock proof) and the simulator
// (timing): every rank runs its list in order; an op starts when the previous op on its rank has
// ended and every tensor it needs is there (receives block; sends are non-blocking, buffered, and
// arrive p2p latency after the producing op ends; a same-rank dependency costs no latency). Each
// rank is advanced until it blocks and woken only when what it waits for completes, so the whole
// play is O(ops), with no rescans.
#pragma once

#include <string>
#include <vector>

#include "schedule/cost_model.h"
#include "schedule/ir.h"

namespace tandem::schedule {

// When one op ran (simulated or measured), in the cost model's unit.
struct OpTime {
  double start = 0;
  double end = 0;
  bool operator==(const OpTime&) const = default;
};

// ranks[r][i] is the time of schedule.ranks[r][i]; the same shape as Schedule::ranks.
struct Timeline {
  std::vector<std::vector<OpTime>> ranks;
};

// A rank that could not go on: its next op and the piece that op waits for. A piece on another
// rank means a receive that never completes; one on the same rank is missing or later in the list.
struct BlockedRank {
  int rank = 0;
  int op_index = 0;
  Op op;
  OpKind waits_for = OpKind::kF;  // kF: a forward (activation); kB: a backward (B or BW; gradient)
  int mb = 0;
  int stage = 0;      // the stage of the awaited piece
  int from_rank = 0;  // where that stage runs for this micro-batch
};

struct PlayResult {
  bool completed = false;
  Timeline timeline;                 // filled for the ops that ran
  std::vector<BlockedRank> blocked;  // empty when completed
};

// Plays `schedule` under `costs` (nullptr: every op takes 1, zero latency, for the deadlock proof).
// Precondition: every op's micro-batch and chunk are in range (throws tandem::Error(kInput) naming
// the op otherwise). Duplicate or missing ops are not diagnosed here (the validator does that);
// a missing dependency shows up as a blocked rank.
PlayResult play(const Schedule& schedule, const CostModel* costs);

// "deadlock: rank 0 op 2 (BW0) waits for the gradient of mb 0 from stage 1 on rank 1; ..."
std::string describe_deadlock(const Schedule& schedule, const PlayResult& result);

}  // namespace tandem::schedule
