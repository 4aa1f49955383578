// Cost model: the --cost string (defaults, keys, errors that name the bad piece) and the
// builder from work and hardware numbers.
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "schedule/cost_model.h"

namespace tandem::schedule {
namespace {

std::string cost_error(std::string_view text) {
  try {
    parse_cost_string(text);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    return e.message();
  }
  return "no error";
}

TEST(ScheduleCostString, DefaultsAndSubsets) {
  const CostModel unit = parse_cost_string("");
  EXPECT_EQ(unit.uniform(), OpCosts{});
  EXPECT_EQ(unit.p2p_latency(), 0);
  EXPECT_EQ(unit.describe(), "F=1,B=1,W=1,FB=3,P2P=0,A2A=0");

  const CostModel full = parse_cost_string("F=1,B=1,W=1,FB=3,P2P=0,A2A=0");
  EXPECT_EQ(full.uniform().fb, 3.0);
  EXPECT_EQ(full.describe(), "F=1,B=1,W=1,FB=3,P2P=0,A2A=0");

  const CostModel some = parse_cost_string(" f=2 , W = 0.5,p2p=0.1 ");
  EXPECT_EQ(some.uniform().f, 2);
  EXPECT_EQ(some.uniform().b, 1);
  EXPECT_EQ(some.uniform().w, 0.5);
  EXPECT_EQ(some.p2p_latency(), 0.1);
  EXPECT_FALSE(some.uniform().fb.has_value());
  EXPECT_EQ(some.describe(), "F=2,B=1,W=0.5,FB=3.5,P2P=0.1,A2A=0");  // FB default = F+B+W

  const CostModel moe = parse_cost_string("A2A_F=0.5,A2A_B=0.25,BW=3");
  EXPECT_EQ(moe.uniform().f_a2a, 0.5);
  EXPECT_EQ(moe.uniform().b_a2a, 0.25);
  EXPECT_EQ(moe.uniform().bw, 3.0);
}

TEST(ScheduleCostString, ErrorsNameTheBadPiece) {
  EXPECT_NE(cost_error("F=1,B").find("bad cost piece 'B' in 'F=1,B': expected KEY=VALUE"), std::string::npos);
  EXPECT_NE(cost_error("F=1,,B=2").find("bad cost piece ''"), std::string::npos);
  EXPECT_NE(cost_error("X=1").find("unknown cost key 'X' in 'X=1'"), std::string::npos);
  EXPECT_NE(cost_error("F=abc").find("bad number 'abc' in cost piece 'F=abc'"), std::string::npos);
  EXPECT_NE(cost_error("F=1x").find("bad number '1x'"), std::string::npos);
  EXPECT_NE(cost_error("F=").find("bad number ''"), std::string::npos);
  EXPECT_NE(cost_error("W=-1").find("cost piece 'W=-1' must be >= 0"), std::string::npos);
  EXPECT_NE(cost_error("F=1,f=2").find("cost key 'F' given twice"), std::string::npos);
  EXPECT_NE(cost_error("A2A=1,A2A_F=2").find("use one form"), std::string::npos);
  EXPECT_NE(cost_error("F=inf").find("bad number"), std::string::npos);
}

TEST(ScheduleCostFromWork, ComputeAllToAllAndLinks) {
  HardwareSpec hw;
  hw.tflops = 500;    // 1 TFLOP -> 2 ms
  hw.a2a_gbps = 50;   // 100 MB -> 2 ms
  hw.p2p_gbps = 100;  // 10 MB -> 0.1 ms
  hw.p2p_latency_ms = 0.05;
  hw.p2p_bytes = 10e6;
  const std::vector<StageWork> stages =
      split_work_evenly(StageWork{4, 4, 4, 200e6, 200e6}, 2, StageWork{1, 0, 0, 0, 0}, StageWork{0, 2, 0, 0, 0});
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[0].f_tflop, 3);
  EXPECT_EQ(stages[1].b_tflop, 4);
  const CostModel model = cost_model_from_work(stages, hw);
  EXPECT_DOUBLE_EQ(model.p2p_latency(), 0.15);
  const auto slots = model.resolve(placement_for(ScheduleKind::k1F1B, 2, 1, 1));
  EXPECT_DOUBLE_EQ(slots[0].f, 6);
  EXPECT_DOUBLE_EQ(slots[0].f_a2a, 2);
  EXPECT_DOUBLE_EQ(slots[1].b, 8);
  EXPECT_DOUBLE_EQ(slots[1].w, 4);
  EXPECT_THROW(cost_model_from_work(stages, HardwareSpec{}), Error);
}

}  // namespace
}  // namespace tandem::schedule
