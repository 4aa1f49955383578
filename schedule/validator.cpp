// The validator (rules in validator.h). Shape, coverage, p2p and order are checked against
// flat per-(mb, stage) position tables, one pass over the ops each; the deadlock proof reuses the
// execution engine of play.h. Messages are formatted only for violations, so a valid schedule of
// 100k ops validates in a few milliseconds.
#include "schedule/validator.h"

#include <cstdint>
#include <map>
#include <tuple>

#include <spdlog/fmt/fmt.h>

#include "schedule/play.h"

namespace tandem::schedule {

bool ValidationReport::has_rule(std::string_view rule) const {
  for (const Violation& v : violations) {
    if (v.rule == rule) return true;
  }
  return false;
}

std::string ValidationReport::summary(std::size_t max_lines) const {
  std::string out;
  for (std::size_t i = 0; i < violations.size() && i < max_lines; ++i) {
    if (i > 0) out += '\n';
    out += violations[i].message;
  }
  if (violations.size() > max_lines || truncated) {
    out += fmt::format("\n... and {}{} more", violations.size() > max_lines ? violations.size() - max_lines : 0,
                       truncated ? "+" : "");
  }
  return out;
}

namespace {

// (rank, op index) packed in one word; kNone when absent.
using Position = std::int64_t;
constexpr Position kNone = -1;
Position pack(int rank, std::size_t index) {
  return (static_cast<Position>(rank) << 32) | static_cast<Position>(index);
}
int rank_of(Position p) { return static_cast<int>(p >> 32); }
std::size_t index_of(Position p) { return static_cast<std::size_t>(p & 0xffffffff); }

class Checker {
 public:
  explicit Checker(const Schedule& s)
      : s_(s), pl_(s.placement), num_stages_(pl_.num_stages()), chunk_(shows_chunk(s.kind)) {
    TANDEM_CHECK_INPUT(static_cast<int>(s_.ranks.size()) == s_.num_ranks && pl_.num_ranks() == s_.num_ranks &&
                           pl_.num_microbatches() == s_.num_microbatches && pl_.num_stages() == s_.num_stages,
                       "schedule has {} rank lists and {} stages for pp={} (placement: pp={}, M={}, stages={})",
                       s_.ranks.size(), s_.num_stages, s_.num_ranks, pl_.num_ranks(), pl_.num_microbatches(),
                       pl_.num_stages());
    const std::size_t keys = static_cast<std::size_t>(s_.num_microbatches) * num_stages_;
    f_.assign(keys, kNone);
    back_.assign(keys, kNone);
    w_.assign(keys, kNone);
    back_is_b_.assign(keys, 0);
  }

  ValidationReport run() {
    check_shape();
    if (!report_.ok()) return std::move(report_);
    check_coverage();
    check_p2p();
    if (!report_.ok()) return std::move(report_);
    check_order();
    if (!report_.ok()) return std::move(report_);
    PlayResult played = play(s_, nullptr);
    if (!played.completed) {
      const BlockedRank& first = played.blocked.front();
      add("deadlock", first.rank, static_cast<std::size_t>(first.op_index), describe_deadlock(s_, played));
    }
    return std::move(report_);
  }

 private:
  std::size_t key(int mb, int stage) const { return static_cast<std::size_t>(mb) * num_stages_ + stage; }
  std::string token(int rank, std::size_t index) const {
    return format_op(s_.ranks[static_cast<std::size_t>(rank)][index], chunk_);
  }
  std::string piece_token(const Piece& p) const {
    std::string out;
    append_piece(out, p, chunk_);
    return out;
  }

  void add(std::string_view rule, int rank, std::size_t index, const std::string& text) {
    if (report_.violations.size() >= ValidationReport::kMaxViolations) {
      report_.truncated = true;
      return;
    }
    Violation v;
    v.rule = rule;
    v.rank = rank;
    v.op_index = static_cast<int>(index);
    v.token = token(rank, index);
    v.message = fmt::format("rank {} op {} ({}): {} [{}]", rank, index, v.token, text, rule);
    report_.violations.push_back(std::move(v));
  }
  void add_unplaced(std::string_view rule, int mb, int stage, const std::string& text) {
    if (report_.violations.size() >= ValidationReport::kMaxViolations) {
      report_.truncated = true;
      return;
    }
    Violation v;
    v.rule = rule;
    v.rank = pl_.slot_of(mb, stage).rank;
    v.message = fmt::format("mb {} stage {} (rank {}): {} [{}]", mb, stage, v.rank, text, rule);
    report_.violations.push_back(std::move(v));
  }

  // Ranges, pair shape, slot, duplicates; fills the position tables.
  void check_shape() {
    for (int r = 0; r < s_.num_ranks; ++r) {
      const auto& ops = s_.ranks[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < ops.size(); ++i) {
        const Op& op = ops[i];
        if (op.second && (op.first.kind != OpKind::kF || !is_backward(op.second->kind))) {
          add("bad-op", r, i, "an overlapped pair is a forward followed by a B or BW of another micro-batch");
          continue;
        }
        check_piece(r, i, op.first);
        if (op.second) check_piece(r, i, *op.second);
      }
    }
  }

  void check_piece(int r, std::size_t i, const Piece& p) {
    if (p.mb < 0 || p.mb >= s_.num_microbatches || p.chunk < 0 || p.chunk >= pl_.num_chunks()) {
      add("bad-op", r, i,
          fmt::format("micro-batch {} must be in [0, {}) and chunk {} in [0, {})", p.mb, s_.num_microbatches, p.chunk,
                      pl_.num_chunks()));
      return;
    }
    const int stage = pl_.stage_of(r, p.chunk);
    const Slot slot = pl_.slot_of(p.mb, stage);
    if (slot != Slot{r, p.chunk}) {
      add("wrong-slot", r, i,
          fmt::format("{} of mb {} at stage {} belongs on rank {} chunk {}, not rank {} chunk {}", op_kind_name(p.kind),
                      p.mb, stage, slot.rank, slot.chunk, r, p.chunk));
      return;
    }
    const std::size_t k = key(p.mb, stage);
    const Position here = pack(r, i);
    auto claim = [&](std::vector<Position>& table, std::string_view what) {
      if (table[k] != kNone) {
        add("duplicate", r, i,
            fmt::format("second {} of mb {} stage {} (the first is rank {} op {})", what, p.mb, stage,
                        rank_of(table[k]), index_of(table[k])));
        return false;
      }
      table[k] = here;
      return true;
    };
    switch (p.kind) {
      case OpKind::kF: claim(f_, "forward"); break;
      case OpKind::kB:
      case OpKind::kBW:
        if (claim(back_, "backward")) back_is_b_[k] = p.kind == OpKind::kB;
        break;
      case OpKind::kW: claim(w_, "weight gradient W"); break;
    }
  }

  void check_coverage() {
    for (int mb = 0; mb < s_.num_microbatches; ++mb) {
      for (int stage = 0; stage < num_stages_; ++stage) {
        const std::size_t k = key(mb, stage);
        if (f_[k] == kNone) add_unplaced("missing", mb, stage, "no forward F");
        if (back_[k] == kNone) {
          add_unplaced("missing", mb, stage, "no backward (BW, or B then W)");
        } else if (back_is_b_[k] && w_[k] == kNone) {
          add_unplaced("missing", mb, stage, "a B whose queued weight gradient W never runs");
        }
        if (w_[k] != kNone && back_[k] != kNone && !back_is_b_[k]) {
          add("duplicate", rank_of(w_[k]), index_of(w_[k]),
              "a W after a full backward BW computes the weight gradient twice (only B queues a W)");
        }
      }
    }
  }

  // Every message an op implies has its other end.
  void check_p2p() {
    for (int r = 0; r < s_.num_ranks; ++r) {
      const auto& ops = s_.ranks[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < ops.size(); ++i) {
        check_piece_p2p(r, i, ops[i].first);
        if (ops[i].second) check_piece_p2p(r, i, *ops[i].second);
      }
    }
  }

  void check_piece_p2p(int r, std::size_t i, const Piece& p) {
    const PieceComm comm = piece_comm(pl_, r, p);
    const bool forward = p.kind == OpKind::kF;
    const std::vector<Position>& peers = forward ? f_ : back_;
    const std::string_view kind = forward ? "F" : "backward";
    if (comm.recv && peers[key(p.mb, comm.recv->from_stage)] == kNone) {
      add("unmatched-recv", r, i,
          fmt::format("receives the {} of mb {} from rank {} (stage {}), which has no {} to send it",
                      tensor_kind_name(comm.recv->tensor), p.mb, comm.recv->peer, comm.recv->from_stage, kind));
    }
    if (comm.send && peers[key(p.mb, comm.send->to_stage)] == kNone) {
      add("unmatched-send", r, i,
          fmt::format("sends the {} of mb {} to rank {} (stage {}), which has no {} to receive it",
                      tensor_kind_name(comm.send->tensor), p.mb, comm.send->peer, comm.send->to_stage, kind));
    }
  }

  // Same-rank dependencies must come strictly earlier in the list (a pair's halves start together).
  void check_order() {
    for (int r = 0; r < s_.num_ranks; ++r) {
      const auto& ops = s_.ranks[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < ops.size(); ++i) {
        check_piece_order(r, i, ops[i].first);
        if (ops[i].second) check_piece_order(r, i, *ops[i].second);
      }
    }
  }

  void check_piece_order(int r, std::size_t i, const Piece& p) {
    const int stage = pl_.stage_of(r, p.chunk);
    // `what` formats the dependency's name; it runs only for a violation (this is a hot loop).
    auto need_before = [&](Position dep, auto&& what) {
      if (dep == kNone || rank_of(dep) != r || index_of(dep) < i) return;
      const std::string where = index_of(dep) == i ? std::string("in the same overlapped pair")
                                                   : fmt::format("at op {}", index_of(dep));
      add("order", r, i,
          fmt::format("{} needs {} first, but that runs {} on the same rank", piece_token(p), what(), where));
    };
    switch (p.kind) {
      case OpKind::kF:
        if (stage > 0) {
          need_before(f_[key(p.mb, stage - 1)], [&] { return fmt::format("the forward of stage {}", stage - 1); });
        }
        break;
      case OpKind::kB:
      case OpKind::kBW:
        need_before(f_[key(p.mb, stage)], [&] { return fmt::format("its forward F{}", p.mb); });
        if (stage + 1 < num_stages_) {
          need_before(back_[key(p.mb, stage + 1)], [&] { return fmt::format("the backward of stage {}", stage + 1); });
        }
        break;
      case OpKind::kW: need_before(back_[key(p.mb, stage)], [&] { return fmt::format("its B{}", p.mb); }); break;
    }
  }

  const Schedule& s_;
  const Placement& pl_;
  const int num_stages_;
  const bool chunk_;
  std::vector<Position> f_, back_, w_;
  std::vector<std::uint8_t> back_is_b_;
  ValidationReport report_;
};

}  // namespace

ValidationReport validate(const Schedule& schedule) { return Checker(schedule).run(); }

void check_valid(const Schedule& schedule, ErrorKind kind) {
  ValidationReport report = validate(schedule);
  if (report.ok()) return;
  throw Error(kind,
              fmt::format("{} schedule (pp={}, micro_batches={}) is invalid:\n{}", schedule_kind_name(schedule.kind),
                          schedule.num_ranks, schedule.num_microbatches, report.summary()),
              __FILE__, __LINE__);
}

std::optional<std::string> channel_order_problem(const Schedule& schedule) {
  // (sender, receiver, tensor) -> messages (mb, from_stage) in posting order, for each side.
  using Channel = std::tuple<int, int, TensorKind>;
  std::map<Channel, std::vector<std::pair<int, int>>> sent, received;
  for (int r = 0; r < schedule.num_ranks; ++r) {
    for (const Op& op : schedule.ranks[static_cast<std::size_t>(r)]) {
      const OpComm comm = op_comm(schedule.placement, r, op);
      for (const Transfer& t : comm.recvs()) received[{t.peer, r, t.tensor}].emplace_back(t.mb, t.from_stage);
      for (const Transfer& t : comm.sends()) sent[{r, t.peer, t.tensor}].emplace_back(t.mb, t.from_stage);
    }
  }
  for (const auto& [channel, sends] : sent) {
    const auto& recvs = received[channel];
    const auto [src, dst, tensor] = channel;
    for (std::size_t i = 0; i < sends.size() || i < recvs.size(); ++i) {
      if (i < sends.size() && i < recvs.size() && sends[i] == recvs[i]) continue;
      auto describe = [](const std::vector<std::pair<int, int>>& list, std::size_t at) {
        return at < list.size() ? fmt::format("mb {} from stage {}", list[at].first, list[at].second)
                                : std::string("nothing");
      };
      return fmt::format("{} channel rank {} -> rank {}: message {} sent is {}, received is {}",
                         tensor_kind_name(tensor), src, dst, i, describe(sends, i), describe(recvs, i));
    }
  }
  return std::nullopt;
}

}  // namespace tandem::schedule
