// The in-order execution engine (see play.h). Completion of F(mb, stage) and of the backward
// (B or BW) of (mb, stage) is kept in one flat table indexed 2 * (mb * num_stages + stage) + {0, 1};
// a blocked rank hangs on an intrusive waiter list of the entry it needs, so each op is looked at
// a constant number of times however the ranks interleave.
#include "schedule/play.h"

#include <algorithm>

#include <spdlog/fmt/fmt.h>

#include "runtime/error.h"

namespace tandem::schedule {

namespace {
constexpr double kNotDone = -1.0;  // all times are >= 0

struct Dependency {
  std::size_t id = 0;  // entry in the completion table
  int rank = 0;        // where the awaited piece runs
  OpKind kind = OpKind::kF;
  int mb = 0;
  int stage = 0;
};

class Engine {
 public:
  Engine(const Schedule& schedule, const CostModel* costs)
      : s_(schedule), pl_(schedule.placement), num_stages_(pl_.num_stages()), num_chunks_(pl_.num_chunks()) {
    TANDEM_CHECK_INPUT(static_cast<int>(s_.ranks.size()) == s_.num_ranks && pl_.num_ranks() == s_.num_ranks &&
                           pl_.num_microbatches() == s_.num_microbatches,
                       "schedule has {} rank lists for pp={} (placement for pp={}, M={})", s_.ranks.size(),
                       s_.num_ranks, pl_.num_ranks(), pl_.num_microbatches());
    if (costs) {
      slot_costs_ = costs->resolve(pl_);
      latency_ = costs->p2p_latency();
      unit_ = false;
    }
    const std::size_t entries = 2 * static_cast<std::size_t>(s_.num_microbatches) * num_stages_;
    done_.assign(entries, kNotDone);
    waiters_.assign(entries, -1);
    next_waiter_.assign(static_cast<std::size_t>(s_.num_ranks), -1);
    pc_.assign(static_cast<std::size_t>(s_.num_ranks), 0);
    clock_.assign(static_cast<std::size_t>(s_.num_ranks), 0.0);
    waiting_.resize(static_cast<std::size_t>(s_.num_ranks));
  }

  PlayResult run() {
    PlayResult result;
    result.timeline.ranks.resize(s_.ranks.size());
    for (std::size_t r = 0; r < s_.ranks.size(); ++r) result.timeline.ranks[r].resize(s_.ranks[r].size());
    std::vector<int> runnable;
    runnable.reserve(s_.ranks.size());
    for (int r = s_.num_ranks - 1; r >= 0; --r) runnable.push_back(r);
    while (!runnable.empty()) {
      const int r = runnable.back();
      runnable.pop_back();
      advance(r, result.timeline.ranks[static_cast<std::size_t>(r)], runnable);
    }
    result.completed = true;
    for (int r = 0; r < s_.num_ranks; ++r) {
      const auto ur = static_cast<std::size_t>(r);
      if (pc_[ur] == s_.ranks[ur].size()) continue;
      result.completed = false;
      const Dependency& d = waiting_[ur];
      result.blocked.push_back(
          BlockedRank{r, static_cast<int>(pc_[ur]), s_.ranks[ur][pc_[ur]], d.kind, d.mb, d.stage, d.rank});
    }
    return result;
  }

 private:
  void check_piece(int r, std::size_t index, const Piece& p) const {
    if (p.mb >= 0 && p.mb < s_.num_microbatches && p.chunk >= 0 && p.chunk < num_chunks_) return;
    TANDEM_THROW(kInput, "rank {} op {} ({}): micro-batch must be in [0, {}) and chunk in [0, {})", r, index,
                 format_op(s_.ranks[static_cast<std::size_t>(r)][index], true), s_.num_microbatches, num_chunks_);
  }

  std::size_t key(int mb, int stage) const { return static_cast<std::size_t>(mb) * num_stages_ + stage; }

  // What `p` (on rank r) needs first: F needs the previous stage's F; a backward needs its own F
  // and the next stage's backward; W needs its B.
  int dependencies(int r, const Piece& p, Dependency out[2]) const {
    const int stage = pl_.stage_of(r, p.chunk);
    const std::size_t k = key(p.mb, stage);
    switch (p.kind) {
      case OpKind::kF:
        if (stage == 0) return 0;
        out[0] = {2 * key(p.mb, stage - 1), pl_.slot_of(p.mb, stage - 1).rank, OpKind::kF, p.mb, stage - 1};
        return 1;
      case OpKind::kB:
      case OpKind::kBW: {
        out[0] = {2 * k, pl_.slot_of(p.mb, stage).rank, OpKind::kF, p.mb, stage};
        if (stage + 1 == num_stages_) return 1;
        out[1] = {2 * key(p.mb, stage + 1) + 1, pl_.slot_of(p.mb, stage + 1).rank, OpKind::kB, p.mb, stage + 1};
        return 2;
      }
      case OpKind::kW: out[0] = {2 * k + 1, r, OpKind::kB, p.mb, stage}; return 1;
    }
    return 0;
  }

  double duration(int r, const Op& op) const {
    if (unit_) return 1.0;
    const std::size_t base = static_cast<std::size_t>(r) * num_chunks_;
    const OpCosts& first = slot_costs_[base + op.first.chunk];
    if (!op.second) return piece_time(first, op.first.kind);
    return pair_time(first, op.first, slot_costs_[base + op.second->chunk], *op.second);
  }

  // Runs rank r until it blocks or finishes; wakes the ranks its ops unblock.
  void advance(int r, std::vector<OpTime>& times, std::vector<int>& runnable) {
    const auto ur = static_cast<std::size_t>(r);
    const std::vector<Op>& ops = s_.ranks[ur];
    std::size_t& pc = pc_[ur];
    while (pc < ops.size()) {
      const Op& op = ops[pc];
      double ready = clock_[ur];
      for (int part = 0; part < (op.second ? 2 : 1); ++part) {
        const Piece& piece = part == 0 ? op.first : *op.second;
        check_piece(r, pc, piece);
        Dependency deps[2];
        const int n = dependencies(r, piece, deps);
        for (int i = 0; i < n; ++i) {
          const double at = done_[deps[i].id];
          if (at == kNotDone) {
            waiting_[ur] = deps[i];
            next_waiter_[ur] = waiters_[deps[i].id];
            waiters_[deps[i].id] = r;
            return;
          }
          ready = std::max(ready, at + (deps[i].rank != r ? latency_ : 0.0));
        }
      }
      const double end = ready + duration(r, op);
      times[pc] = OpTime{ready, end};
      clock_[ur] = end;
      ++pc;
      complete(r, op.first, end, runnable);
      if (op.second) complete(r, *op.second, end, runnable);
    }
  }

  void complete(int r, const Piece& p, double end, std::vector<int>& runnable) {
    if (p.kind == OpKind::kW) return;  // nothing waits for a W
    const std::size_t id = 2 * key(p.mb, pl_.stage_of(r, p.chunk)) + (is_backward(p.kind) ? 1 : 0);
    if (done_[id] == kNotDone) done_[id] = end;  // a duplicate (the validator reports it) keeps the first
    for (int w = waiters_[id]; w != -1;) {
      const int next = next_waiter_[static_cast<std::size_t>(w)];
      runnable.push_back(w);
      w = next;
    }
    waiters_[id] = -1;
  }

  const Schedule& s_;
  const Placement& pl_;
  const int num_stages_;
  const int num_chunks_;
  bool unit_ = true;
  double latency_ = 0;
  std::vector<OpCosts> slot_costs_;
  std::vector<double> done_;
  std::vector<int> waiters_;      // head of the list of ranks waiting on an entry, -1 if none
  std::vector<int> next_waiter_;  // per rank: the next rank in the same list
  std::vector<std::size_t> pc_;
  std::vector<double> clock_;
  std::vector<Dependency> waiting_;
};
}  // namespace

PlayResult play(const Schedule& schedule, const CostModel* costs) { return Engine(schedule, costs).run(); }

std::string describe_deadlock(const Schedule& schedule, const PlayResult& result) {
  constexpr std::size_t kMaxListed = 8;
  const bool chunk = shows_chunk(schedule.kind);
  std::string out = "deadlock: with every rank running its list in order and blocking receives, ";
  for (std::size_t i = 0; i < result.blocked.size() && i < kMaxListed; ++i) {
    const BlockedRank& b = result.blocked[i];
    if (i > 0) out += "; ";
    out += fmt::format("rank {} op {} ({}) ", b.rank, b.op_index, format_op(b.op, chunk));
    if (b.from_rank == b.rank) {
      out += fmt::format("waits for the {} of mb {} stage {} on its own rank, which is missing or later in its list",
                         b.waits_for == OpKind::kF ? "forward" : "backward", b.mb, b.stage);
    } else {
      out += fmt::format("waits for the {} of mb {} from stage {} on rank {}",
                         b.waits_for == OpKind::kF ? "activation" : "gradient", b.mb, b.stage, b.from_rank);
    }
  }
  if (result.blocked.size() > kMaxListed) out += fmt::format("; and {} more ranks", result.blocked.size() - kMaxListed);
  return out;
}

}  // namespace tandem::schedule
