// JSON I/O: the schedule round trip for every kind (and its exact text), errors with paths, and
// the IR surface the executor uses (tokens, placement, implied p2p).
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "schedule/generators.h"
#include "schedule/json_io.h"
#include "schedule/validator.h"

namespace tandem::schedule {
namespace {

std::string input_error(std::string_view text) {
  try {
    schedule_from_json(text);
  } catch (const Error& e) {
    EXPECT_TRUE(e.kind() == ErrorKind::kInput || e.kind() == ErrorKind::kConfig) << e.message();
    return e.message();
  }
  return "no error";
}

TEST(ScheduleJson, MalformedJsonNamesTheLineOrKey) {
  EXPECT_EQ(input_error("{\"kind\": \"1f1b\",\n  \"ranks\": [1, 2,,]\n}"),
            "JSON error at line 2, column 18: syntax error while parsing value - unexpected ','; expected '[', '{', or "
            "a literal");
  EXPECT_EQ(input_error(R"({"kind": "1f1b", "kind": "gpipe"})"),
            "JSON error: key \"kind\" appears twice in the top-level object");
  EXPECT_NE(input_error("[1] 2").find("expected end of input"), std::string::npos);
  EXPECT_EQ(input_error("[1]"), "a schedule file is a JSON object, not an array");
}

TEST(ScheduleJson, RoundTripEveryKind) {
  for (ScheduleKind kind : kAllScheduleKinds) {
    const Schedule s = generate(kind, 4, 8, kind == ScheduleKind::kInterleaved ? 3 : 0);
    const std::string text = schedule_to_json(s);
    const Schedule back = schedule_from_json(text);
    EXPECT_EQ(back, s) << text;
    EXPECT_EQ(schedule_to_json(back), text);
  }
  // The layout tandem has always written: scalars on the first line, one rank per line.
  EXPECT_EQ(schedule_to_json(generate(ScheduleKind::k1F1B, 2, 2)),
            "{\"format\": \"tandem-schedule/1\", \"kind\": \"1f1b\", \"num_ranks\": 2, \"num_microbatches\": 2, "
            "\"num_chunks\": 1,\n"
            " \"ranks\": [\n"
            "  [\"F0\", \"F1\", \"BW0\", \"BW1\"],\n"
            "  [\"F0\", \"BW0\", \"F1\", \"BW1\"]\n"
            " ]}\n");
}

TEST(ScheduleJson, HandWrittenFileValidates) {
  const Schedule s = schedule_from_json(R"({
    "comment": "1F1B on two ranks, written by hand",
    "kind": "1f1b", "num_microbatches": 2,
    "ranks": [["F0", "F1", "BW0", "BW1"],
              ["F0", "BW0", "F1", "BW1"]]})");
  EXPECT_EQ(s.num_ranks, 2);
  EXPECT_TRUE(validate(s).ok()) << validate(s).summary();
}

TEST(ScheduleJson, ErrorsNameThePath) {
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2, "ranks": [["F0", "X1"]]})")
                .find("ranks[0][1]: bad op token 'X1'"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2, "ranks": [["F0", 3]]})")
                .find("ranks[0][1] must be a token"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2.5, "ranks": [["F0"]]})")
                .find("num_microbatches must be an integer >= 1 (got 2.5)"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2, "ranks": [["F0"]], "stages": 3})")
                .find("unknown key \"stages\""),
            std::string::npos);
  EXPECT_NE(
      input_error(R"({"kind": "zigzag", "num_microbatches": 2, "ranks": [["F0"]]})").find("unknown schedule kind"),
      std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_ranks": 3, "num_microbatches": 2, "ranks": [["F0"]]})")
                .find("num_ranks is 3 but \"ranks\" lists 1 ranks"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "dualpipe", "num_chunks": 3, "num_microbatches": 2, "ranks": [["F0"]]})")
                .find("dualpipe holds 2 chunk(s) per rank, but num_chunks is 3"),
            std::string::npos);
}

TEST(ScheduleOps, ErrorsNameTheLine) {
  try {
    schedule_from_ops("0: F0 BW0\n\n2: F0 BW0\n", ScheduleKind::k1F1B, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "ops line 3: expected '1: tok tok ...' (ranks in order from 0)");
  }
  try {
    schedule_from_ops("0: F0 BWx\n", ScheduleKind::k1F1B, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "ops line 1: bad op token 'BWx': expected a micro-batch number after 'BW'");
  }
}

TEST(ScheduleIr, TokensAndPlacement) {
  const Placement dual = placement_for(ScheduleKind::kDualPipe, 4, 2, 8);
  EXPECT_EQ(parse_op("F3+BW5", dual), Op::pair({OpKind::kF, 3, 0}, {OpKind::kBW, 5, 1}));
  EXPECT_EQ(format_op(Op::pair({OpKind::kF, 4, 1}, {OpKind::kBW, 0, 0}), true), "F4.1+BW0.0");
  EXPECT_EQ(dual.stage_of(1, 1), 2);
  EXPECT_EQ(dual.slot_of(6, 0), (Slot{3, 1}));  // up-flowing micro-batches enter at rank P-1
  const Placement v = placement_for(ScheduleKind::kDualPipeV, 4, 2, 8);
  EXPECT_EQ(v.num_stages(), 8);
  EXPECT_EQ(v.stage_of(0, 1), 7);
  EXPECT_EQ(v.slot_of(0, 4), (Slot{3, 1}));
  const Placement inter = placement_for(ScheduleKind::kInterleaved, 4, 3, 8);
  EXPECT_EQ(inter.stage_of(2, 1), 6);
  EXPECT_EQ(inter.slot_of(0, 9), (Slot{1, 2}));
}

TEST(ScheduleIr, ImpliedPointToPoint) {
  // DualPipeV turns around on rank P-1: chunk 0's last stage and chunk 1's first are both there.
  const Placement v = placement_for(ScheduleKind::kDualPipeV, 4, 2, 8);
  const PieceComm turn = piece_comm(v, 3, {OpKind::kF, 2, 0});
  EXPECT_EQ(turn.recv, (Transfer{TensorKind::kActivation, 2, 2, 2, 3}));
  EXPECT_FALSE(turn.send.has_value());
  EXPECT_FALSE(piece_comm(v, 3, {OpKind::kF, 2, 1}).recv.has_value());
  const PieceComm loss = piece_comm(v, 0, {OpKind::kF, 2, 1});
  EXPECT_TRUE(loss.computes_loss);
  EXPECT_FALSE(loss.send.has_value());
  const PieceComm back = piece_comm(v, 0, {OpKind::kBW, 2, 1});
  EXPECT_FALSE(back.recv.has_value());  // the loss is local
  EXPECT_EQ(back.send, (Transfer{TensorKind::kGradient, 1, 2, 7, 6}));
  EXPECT_FALSE(piece_comm(v, 0, {OpKind::kW, 2, 1}).send.has_value());
  // DualPipe: an up-flowing micro-batch's forward goes from rank r to rank r-1.
  const Placement dual = placement_for(ScheduleKind::kDualPipe, 4, 2, 8);
  EXPECT_EQ(piece_comm(dual, 2, {OpKind::kF, 5, 1}).send, (Transfer{TensorKind::kActivation, 1, 5, 1, 2}));
  // Interleaved on one rank: every neighbour is local, so nothing is sent.
  const Placement one = placement_for(ScheduleKind::kInterleaved, 1, 3, 2);
  const OpComm comm = op_comm(one, 0, Op::single(OpKind::kF, 0, 1));
  EXPECT_EQ(comm.num_recvs + comm.num_sends, 0);
  // A pair posts both halves' receives before it runs and both sends after.
  const OpComm pair = op_comm(dual, 1, Op::pair({OpKind::kF, 6, 1}, {OpKind::kBW, 0, 0}));
  EXPECT_EQ(pair.recvs().size(), 2u);
  EXPECT_EQ(pair.sends().size(), 2u);
}

}  // namespace
}  // namespace tandem::schedule
