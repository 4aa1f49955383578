// JSON I/O: the reader, the schedule round trip for every kind, errors with paths, and the IR
// surface the executor uses (tokens, placement, implied p2p).
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

TEST(ScheduleJsonReader, Values) {
  const json::Value v = json::parse(R"( {"a": [1, -2.5e1, true, false, null], "s": "x\"\\\n\u00e9\ud83d\ude00", "o": {}} )");
  ASSERT_TRUE(v.is(json::Value::Type::kObject));
  EXPECT_EQ(v.keys(), (std::vector<std::string>{"a", "s", "o"}));
  const auto& a = v.find("a")->items();
  EXPECT_EQ(a[0].as_number(), 1);
  EXPECT_EQ(a[1].as_number(), -25);
  EXPECT_TRUE(a[2].as_bool());
  EXPECT_TRUE(a[4].is(json::Value::Type::kNull));
  EXPECT_EQ(v.find("s")->as_string(), "x\"\\\n\xc3\xa9\xf0\x9f\x98\x80");
  std::string quoted;
  json::append_string(quoted, "a\"b\\c\n\x01");
  EXPECT_EQ(quoted, "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(json::parse(quoted).as_string(), "a\"b\\c\n\x01");
}

TEST(ScheduleJsonReader, ErrorsCarryLineAndColumn) {
  try {
    json::parse("{\n  \"a\": [1, 2,,]\n}");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInput);
    EXPECT_EQ(e.message(), "JSON error at line 2 column 14: expected a value");
  }
  EXPECT_THROW(json::parse("[1] 2"), Error);
  EXPECT_THROW(json::parse("\"abc"), Error);
  EXPECT_THROW(json::parse("{\"a\": 1, \"a\": 2}"), Error);
  EXPECT_THROW(json::parse(std::string(100, '[') + std::string(100, ']')), Error);
}

TEST(ScheduleJson, RoundTripEveryKind) {
  for (ScheduleKind kind : kAllScheduleKinds) {
    const Schedule s = generate(kind, 4, 8, kind == ScheduleKind::kInterleaved ? 3 : 0);
    const std::string text = schedule_to_json(s);
    const Schedule back = schedule_from_json(text);
    EXPECT_EQ(back, s) << text;
    EXPECT_EQ(schedule_to_json(back), text);
  }
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
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2, "ranks": [["F0", 3]]})").find("ranks[0][1] must be a token"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2.5, "ranks": [["F0"]]})")
                .find("num_microbatches must be an integer >= 1 (got 2.5)"),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "1f1b", "num_microbatches": 2, "ranks": [["F0"]], "stages": 3})")
                .find("unknown key \"stages\""),
            std::string::npos);
  EXPECT_NE(input_error(R"({"kind": "zigzag", "num_microbatches": 2, "ranks": [["F0"]]})").find("unknown schedule kind"),
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
