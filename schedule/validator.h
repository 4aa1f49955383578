// The schedule validator: proves that a Schedule (generated, or hand-written and loaded from JSON
// or the ops notation) is runnable and complete. Rules, each with the id that messages carry:
//   bad-op          micro-batch or chunk out of range; a pair that is not forward + (B or BW)
//   wrong-slot      the op's (rank, chunk) is not where the placement puts its (mb, stage)
//   duplicate       a second F, a second backward, a second W, or a W after a full BW
//   missing         a (mb, stage) without F, without backward, or a B without its W
//   unmatched-send  a send whose receiving op does not exist
//   unmatched-recv  a receive whose sending op does not exist
//   order           a same-rank dependency that comes later in the list (or in the same pair):
//                   F after the previous stage's F, a backward after its F and after the next
//                   stage's backward, W after its B
//   deadlock        running every rank's list in order with blocking receives and buffered sends
//                   stalls (cross-rank dependencies are proven by playing the schedule, O(ops))
// Rules are checked in that order of groups (shape, coverage and p2p, order, deadlock); a group
// runs only when the earlier ones passed, so the report names causes rather than consequences.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "schedule/ir.h"

namespace tandem::schedule {

struct Violation {
  std::string rule;  // one of the ids above
  int rank = -1;     // -1 when no single op is at fault
  int op_index = -1;
  std::string token;    // the op's token, empty when no single op is at fault
  std::string message;  // a sentence naming rank, op index, token and rule
};

struct ValidationReport {
  std::vector<Violation> violations;  // at most kMaxViolations, in rule-group order
  bool truncated = false;             // more violations existed than were kept

  static constexpr std::size_t kMaxViolations = 50;
  bool ok() const { return violations.empty(); }
  bool has_rule(std::string_view rule) const;
  // The first few messages, one per line, with a count of the rest.
  std::string summary(std::size_t max_lines = 10) const;
};

// Checks every rule above. Never throws for a bad schedule (only for one whose rank lists do not
// match num_ranks, kInput). O(ops + micro-batches * stages).
ValidationReport validate(const Schedule& schedule);

// validate() and throw tandem::Error(kind) with the summary when it fails. Use kInput for a
// user's schedule, kInternal for a generated one.
void check_valid(const Schedule& schedule, ErrorKind kind = ErrorKind::kInput);

// For an executor that matches messages first-in-first-out instead of by tag: whether, for every
// (sender, receiver, tensor kind), the sender's sends come in the order of the receiver's
// receives (each rank posting its receives and sends in list order). Every generated schedule
// has this property (tested); activations and gradients between the same two ranks may still
// cross (DualPipe, DualPipeV), so one FIFO channel per peer is not enough, one per (peer, tensor
// kind) is. Returns the first channel where the orders differ. Precondition: validate() passed.
std::optional<std::string> channel_order_problem(const Schedule& schedule);

}  // namespace tandem::schedule
