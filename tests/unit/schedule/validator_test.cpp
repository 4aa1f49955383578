// Validator: hand-made bad schedules, each caught by the rule it breaks, with messages that
// name rank, op index, token and rule.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/error.h"
#include "schedule/generators.h"
#include "schedule/json_io.h"
#include "schedule/validator.h"

namespace tandem::schedule {
namespace {

Schedule from_ops(ScheduleKind kind, int m, std::string_view text) { return schedule_from_ops(text, kind, m); }

// Removes the first op with this token from rank r.
void erase_token(Schedule& s, int r, std::string_view token) {
  auto& ops = s.ranks[static_cast<std::size_t>(r)];
  auto it =
      std::find_if(ops.begin(), ops.end(), [&](const Op& op) { return format_op(op, shows_chunk(s.kind)) == token; });
  ASSERT_NE(it, ops.end()) << token;
  ops.erase(it);
}

TEST(ScheduleValidator, AcceptsAHandWrittenSchedule) {
  const Schedule s = from_ops(ScheduleKind::k1F1B, 2, "0: F0 F1 BW0 BW1\n1: F0 BW0 F1 BW1\n");
  EXPECT_TRUE(validate(s).ok()) << validate(s).summary();
  EXPECT_NO_THROW(check_valid(s));
}

TEST(ScheduleValidator, MissingOp) {
  Schedule s = generate(ScheduleKind::kZb1p, 3, 4);
  erase_token(s, 1, "W2");
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("missing")) << report.summary();
  EXPECT_NE(report.summary().find("mb 2 stage 1 (rank 1): a B whose queued weight gradient W never runs [missing]"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, MissingForwardShowsAsMissingAndUnmatchedSend) {
  Schedule s = generate(ScheduleKind::k1F1B, 4, 8);
  erase_token(s, 2, "F3");
  const ValidationReport report = validate(s);
  EXPECT_TRUE(report.has_rule("missing")) << report.summary();
  ASSERT_TRUE(report.has_rule("unmatched-send")) << report.summary();
  ASSERT_TRUE(report.has_rule("unmatched-recv")) << report.summary();
  // Rank 1 sends F3's activation to rank 2, which no longer has an F3 to receive it.
  EXPECT_NE(report.summary().find("(F3): sends the activation of mb 3 to rank 2 (stage 2), which has no F to receive "
                                  "it [unmatched-send]"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, UnmatchedReceiveOfAGradient) {
  Schedule s = generate(ScheduleKind::k1F1B, 2, 2);
  erase_token(s, 1, "BW1");
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("unmatched-recv")) << report.summary();
  EXPECT_NE(report.summary().find("rank 0 op 3 (BW1): receives the gradient of mb 1 from rank 1 (stage 1)"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, Duplicate) {
  Schedule s = generate(ScheduleKind::kGpipe, 2, 2);
  s.ranks[0].push_back(Op::single(OpKind::kF, 1));
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("duplicate")) << report.summary();
  EXPECT_NE(report.summary().find("rank 0 op 4 (F1): second forward of mb 1 stage 0 (the first is rank 0 op 1) "
                                  "[duplicate]"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, WAfterAFullBackwardIsADuplicate) {
  const Schedule s = from_ops(ScheduleKind::k1F1B, 1, "0: F0 BW0 W0\n");
  EXPECT_TRUE(validate(s).has_rule("duplicate")) << validate(s).summary();
}

TEST(ScheduleValidator, OrderViolationOnOneRank) {
  // Rank 1 (the last stage) runs BW0 before F0.
  const Schedule s = from_ops(ScheduleKind::k1F1B, 2, "0: F0 F1 BW0 BW1\n1: BW0 F0 F1 BW1\n");
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("order")) << report.summary();
  EXPECT_NE(report.summary().find("rank 1 op 0 (BW0): BW0 needs its forward F0 first, but that runs at op 1 on the "
                                  "same rank [order]"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, PairWhoseHalvesDependOnEachOther) {
  const Schedule s = from_ops(ScheduleKind::k1F1B, 1, "0: F0+BW0\n");
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("order")) << report.summary();
  EXPECT_NE(report.summary().find("in the same overlapped pair"), std::string::npos) << report.summary();
}

TEST(ScheduleValidator, DeadlockAcrossRanks) {
  // Rank 0 waits for BW0's gradient before it sends F1; rank 1 waits for F1 before it runs BW0.
  const Schedule s = from_ops(ScheduleKind::k1F1B, 2, "0: F0 BW0 F1 BW1\n1: F1 F0 BW0 BW1\n");
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("deadlock")) << report.summary();
  const std::string text = report.summary();
  EXPECT_NE(text.find("rank 0 op 1 (BW0) waits for the gradient of mb 0 from stage 1 on rank 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("rank 1 op 0 (F1) waits for the activation of mb 1 from stage 0 on rank 0"), std::string::npos)
      << text;
  try {
    check_valid(s);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInput);
    EXPECT_NE(e.message().find("[deadlock]"), std::string::npos) << e.message();
  }
}

TEST(ScheduleValidator, WrongSlotForDualPipeDirection) {
  // Micro-batch 5 of 8 flows up, so it must use chunk 1 (stage P-1-r); forcing chunk 0 is wrong.
  Schedule s = generate(ScheduleKind::kDualPipe, 4, 8);
  for (Op& op : s.ranks[0]) {
    if (op.first.mb == 5 && op.first.kind == OpKind::kF) op.first.chunk = 0;
  }
  const ValidationReport report = validate(s);
  ASSERT_TRUE(report.has_rule("wrong-slot")) << report.summary();
  EXPECT_NE(report.summary().find("F of mb 5 at stage 0 belongs on rank 3 chunk 1, not rank 0 chunk 0"),
            std::string::npos)
      << report.summary();
}

TEST(ScheduleValidator, BadOps) {
  EXPECT_TRUE(validate(from_ops(ScheduleKind::k1F1B, 2, "0: F0 F1 BW1+F0 BW0\n")).has_rule("bad-op"));
  EXPECT_TRUE(validate(from_ops(ScheduleKind::k1F1B, 2, "0: F0 F1 BW0 BW1 F7\n")).has_rule("bad-op"));
  EXPECT_TRUE(validate(from_ops(ScheduleKind::k1F1B, 2, "0: F0.1 F1 BW0 BW1\n")).has_rule("bad-op"));
}

TEST(ScheduleValidator, ReportIsCapped) {
  Schedule s = generate(ScheduleKind::kGpipe, 8, 64);
  for (auto& ops : s.ranks) ops.resize(ops.size() / 2);  // every backward missing
  const ValidationReport report = validate(s);
  EXPECT_EQ(report.violations.size(), ValidationReport::kMaxViolations);
  EXPECT_TRUE(report.truncated);
  EXPECT_NE(report.summary(3).find("... and"), std::string::npos);
}

}  // namespace
}  // namespace tandem::schedule
