// DualPipe and DualPipeV generators: the eight phases of docs/dualpipe.md#dualpipe-phases, written once for both.
// DualPipe's rank r works with h = min(r, P-1-r), H = P/2 and the two flow directions ("near" is
// the direction entering at the end closer to r); DualPipeV substitutes h = r, H = P, near =
// chunk 0, far = chunk 1. Each direction's F and backward counters advance in micro-batch order;
// queued weight gradients drain first-in-first-out and the queue ends empty.
#include <algorithm>
#include <deque>

#include "runtime/error.h"
#include "schedule/generators.h"

namespace tandem::schedule {

namespace {

// The micro-batches one direction (or one DualPipeV chunk) processes on this rank, in order.
struct Direction {
  int first_mb = 0;  // micro-batch numbers first_mb, first_mb + 1, ...
  int chunk = 0;
  int next_forward = 0;
  int next_backward = 0;
};

// Phase parameters of one rank (see the file comment).
struct PhasePlan {
  int h = 0;
  int big_h = 0;
  int main_iterations = 0;           // phase 4's count
  bool unpaired_first_main = false;  // phase 4's exception: first F near and BW far not overlapped
};

class RankBuilder {
 public:
  explicit RankBuilder(std::vector<Op>& ops) : ops_(ops) {}

  Piece forward(Direction& d) { return Piece{OpKind::kF, d.first_mb + d.next_forward++, d.chunk}; }

  // A backward of the direction's next micro-batch: full (BW), or input-grad only with its W queued.
  Piece backward(Direction& d, bool queue_w) {
    Piece piece{queue_w ? OpKind::kB : OpKind::kBW, d.first_mb + d.next_backward++, d.chunk};
    if (queue_w) queued_w_.push_back(Piece{OpKind::kW, piece.mb, piece.chunk});
    return piece;
  }

  void emit(Piece piece) { ops_.push_back(Op{piece, std::nullopt}); }
  void emit_pair(Piece forward_piece, Piece backward_piece) { ops_.push_back(Op::pair(forward_piece, backward_piece)); }
  void emit_queued_w() {
    TANDEM_CHECK(!queued_w_.empty(), "DualPipe phase plan pops an empty W queue");
    emit(queued_w_.front());
    queued_w_.pop_front();
  }
  bool w_queue_empty() const { return queued_w_.empty(); }

 private:
  std::vector<Op>& ops_;
  std::deque<Piece> queued_w_;
};

void emit_phases(const PhasePlan& plan, Direction near, Direction far, std::vector<Op>& ops) {
  RankBuilder b(ops);
  const int h = plan.h;
  const int rest = plan.big_h - h - 1;  // H-h-1: the count of phases 3, 5 and 7
  // 1. 2(H-h-1) forwards of near micro-batches.
  for (int i = 0; i < 2 * rest; ++i) b.emit(b.forward(near));
  // 2. h+1 times: forward near, forward far.
  for (int i = 0; i < h + 1; ++i) {
    b.emit(b.forward(near));
    b.emit(b.forward(far));
  }
  // 3. H-h-1 times: backward far with W queued, the W just queued, forward far.
  for (int i = 0; i < rest; ++i) {
    b.emit(b.backward(far, /*queue_w=*/true));
    b.emit_queued_w();
    b.emit(b.forward(far));
  }
  // 4. Main phase: pair (F near + BW far), pair (F far + BW near).
  for (int i = 0; i < plan.main_iterations; ++i) {
    Piece f_near = b.forward(near);
    Piece bw_far = b.backward(far, false);
    if (i == 0 && plan.unpaired_first_main) {
      b.emit(f_near);
      b.emit(bw_far);
    } else {
      b.emit_pair(f_near, bw_far);
    }
    Piece f_far = b.forward(far);
    b.emit_pair(f_far, b.backward(near, false));
  }
  // 5. H-h-1 times: full backward far, then pair (F far + BW near).
  for (int i = 0; i < rest; ++i) {
    b.emit(b.backward(far, false));
    Piece f_far = b.forward(far);
    b.emit_pair(f_far, b.backward(near, false));
  }
  // 6. h+1 times: backward far, backward near; from iteration (h+1) div 2 on they queue their W:
  //    before that iteration's far backward when h is odd, between far and near when h is even.
  const int switch_at = (h + 1) / 2;
  bool queue_w = false;
  for (int i = 0; i < h + 1; ++i) {
    if (i == switch_at && h % 2 == 1) queue_w = true;
    b.emit(b.backward(far, queue_w));
    if (i == switch_at && h % 2 == 0) queue_w = true;
    b.emit(b.backward(near, queue_w));
  }
  // 7. H-h-1 times: one queued W, then a backward near with its W queued.
  for (int i = 0; i < rest; ++i) {
    b.emit_queued_w();
    b.emit(b.backward(near, true));
  }
  // 8. h+1 queued W's; the queue ends empty.
  for (int i = 0; i < h + 1; ++i) b.emit_queued_w();
  TANDEM_CHECK(b.w_queue_empty(), "DualPipe phase plan left weight gradients queued (h={}, H={})", h, plan.big_h);
}

}  // namespace

Schedule generate_dualpipe(int num_ranks, int num_microbatches) {
  if (auto rule = precondition_violation(ScheduleKind::kDualPipe, num_ranks, num_microbatches, 2)) {
    TANDEM_THROW(kConfig, "{}", *rule);
  }
  Schedule s = make_empty_schedule(ScheduleKind::kDualPipe, num_ranks, num_microbatches, 2);
  const int p = num_ranks;
  const int half = num_microbatches / 2;
  for (int r = 0; r < p; ++r) {
    PhasePlan plan;
    plan.h = std::min(r, p - 1 - r);
    plan.big_h = p / 2;
    plan.main_iterations = half - p + plan.h + 1;
    plan.unpaired_first_main = plan.h == plan.big_h - 1;
    const Direction down{0, 0};
    const Direction up{half, 1};
    const bool near_is_down = r < plan.big_h;
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(3 * static_cast<std::size_t>(num_microbatches) / 2 + 2 * static_cast<std::size_t>(p));
    emit_phases(plan, near_is_down ? down : up, near_is_down ? up : down, ops);
  }
  return s;
}

Schedule generate_dualpipev(int num_ranks, int num_microbatches) {
  if (auto rule = precondition_violation(ScheduleKind::kDualPipeV, num_ranks, num_microbatches, 2)) {
    TANDEM_THROW(kConfig, "{}", *rule);
  }
  Schedule s = make_empty_schedule(ScheduleKind::kDualPipeV, num_ranks, num_microbatches, 2);
  const int p = num_ranks;
  for (int r = 0; r < p; ++r) {
    PhasePlan plan;
    plan.h = r;
    plan.big_h = p;
    plan.main_iterations = num_microbatches - 2 * p + r + 1;
    plan.unpaired_first_main = r == p - 1;
    auto& ops = s.ranks[static_cast<std::size_t>(r)];
    ops.reserve(3 * static_cast<std::size_t>(num_microbatches) + 2 * static_cast<std::size_t>(p));
    emit_phases(plan, Direction{0, 0}, Direction{0, 1}, ops);
  }
  return s;
}

}  // namespace tandem::schedule
