// Generators: docs/dualpipe.md's worked example token for token, a hand-derived DualPipeV case,
// the small textbook orders, the precondition messages, and the whole (P, M) grid validated.
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "schedule/generators.h"
#include "schedule/json_io.h"
#include "schedule/render.h"
#include "schedule/validator.h"
#include "schedule_test_util.h"

namespace tandem::schedule {
namespace {

TEST(ScheduleGenerators, DualPipeWorkedExampleTokenForToken) {
  // Copied from docs/dualpipe.md#worked-example (P=4, M=8).
  const std::string expected = "0: F0 F1 F2 F4 B4 W4 F5 F3+BW5 F6+BW0 BW6 F7+BW1 BW7 B2 W2 B3 W3\n"
                               "1: F0 F4 F1 F5 F2 BW4 F6+BW0 F3+BW5 F7+BW1 BW6 BW2 B7 B3 W7 W3\n"
                               "2: F4 F0 F5 F1 F6 BW0 F2+BW4 F7+BW1 F3+BW5 BW2 BW6 B3 B7 W3 W7\n"
                               "3: F4 F5 F6 F0 B0 W0 F1 F7+BW1 F2+BW4 BW2 F3+BW5 BW3 B6 W6 B7 W7\n";
  EXPECT_EQ(render_ops(generate(ScheduleKind::kDualPipe, 4, 8)), expected);
}

TEST(ScheduleGenerators, DualPipeVHandDerivedP2M4) {
  // Derived by hand from docs/dualpipe.md#dualpipev's phases with h = r, H = P = 2, near = chunk 0:
  // rank 0 (h=0): phase 1 F0.0 F1.0 | 2 F2.0 F0.1 | 3 B0.1 W0.1 F1.1 | 4 (1x) F3.0+BW1.1 F2.1+BW0.0
  //   | 5 BW2.1 F3.1+BW1.0 | 6 (switch at 0, h even: between) BW3.1 B2.0 | 7 W2.0 B3.0 | 8 W3.0
  // rank 1 (h=1, the last rank: phase 4's first iteration unpaired): 2 F0.0 F0.1 F1.0 F1.1
  //   | 4 (2x) F2.0 BW0.1 F2.1+BW0.0 F3.0+BW1.1 F3.1+BW1.0 | 6 (switch at 1, h odd: before far)
  //   BW2.1 BW2.0 B3.1 B3.0 | 8 W3.1 W3.0
  const std::string expected =
      "0: F0.0 F1.0 F2.0 F0.1 B0.1 W0.1 F1.1 F3.0+BW1.1 F2.1+BW0.0 BW2.1 F3.1+BW1.0 BW3.1 B2.0 W2.0 B3.0 W3.0\n"
      "1: F0.0 F0.1 F1.0 F1.1 F2.0 BW0.1 F2.1+BW0.0 F3.0+BW1.1 F3.1+BW1.0 BW2.1 BW2.0 B3.1 B3.0 W3.1 W3.0\n";
  const Schedule s = generate(ScheduleKind::kDualPipeV, 2, 4);
  EXPECT_EQ(render_ops(s), expected);
  EXPECT_TRUE(validate(s).ok()) << validate(s).summary();
}

TEST(ScheduleGenerators, SmallTextbookOrders) {
  EXPECT_EQ(render_ops(generate(ScheduleKind::kGpipe, 2, 3)), "0: F0 F1 F2 BW0 BW1 BW2\n1: F0 F1 F2 BW0 BW1 BW2\n");
  EXPECT_EQ(render_ops(generate(ScheduleKind::k1F1B, 3, 4)), "0: F0 F1 F2 BW0 F3 BW1 BW2 BW3\n"
                                                             "1: F0 F1 BW0 F2 BW1 F3 BW2 BW3\n"
                                                             "2: F0 BW0 F1 BW1 F2 BW2 F3 BW3\n");
  EXPECT_EQ(render_ops(generate(ScheduleKind::kZb1p, 2, 3)), "0: F0 F1 B0 W0 F2 B1 W1 B2 W2\n"
                                                             "1: F0 B0 F1 B1 W0 F2 B2 W1 W2\n");
  // Interleaved P=2, v=2, M=4: chunk 0 then chunk 1 for each group of P micro-batches.
  EXPECT_EQ(render_ops(generate(ScheduleKind::kInterleaved, 2, 4, 2)),
            "0: F0.0 F1.0 F0.1 F1.1 F2.0 BW0.1 F3.0 BW1.1 F2.1 BW0.0 F3.1 BW1.0 BW2.1 BW3.1 BW2.0 BW3.0\n"
            "1: F0.0 F1.0 F0.1 BW0.1 F1.1 BW1.1 F2.0 BW0.0 F3.0 BW1.0 F2.1 BW2.1 F3.1 BW3.1 BW2.0 BW3.0\n");
}

TEST(ScheduleGenerators, PreconditionsNameTheRule) {
  auto message = [](ScheduleKind kind, int p, int m, int v) {
    try {
      generate(kind, p, m, v);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kConfig);
      EXPECT_EQ(exit_code_for(e.kind()), 2);
      return e.message();
    }
    return std::string("no error");
  };
  EXPECT_EQ(message(ScheduleKind::kDualPipe, 3, 12, 0), "dualpipe needs an even number of pipeline ranks (got pp=3)");
  EXPECT_EQ(message(ScheduleKind::kDualPipe, 4, 6, 0), "dualpipe needs micro_batches >= 2*pp (got 6 < 8)");
  EXPECT_EQ(message(ScheduleKind::kDualPipe, 4, 9, 0),
            "dualpipe needs an even number of micro-batches, half flowing each way (got 9)");
  EXPECT_EQ(message(ScheduleKind::kDualPipeV, 3, 5, 0), "dualpipev needs micro_batches >= 2*pp (got 5 < 6)");
  EXPECT_EQ(message(ScheduleKind::kInterleaved, 4, 6, 2),
            "interleaved needs micro_batches divisible by pp (Megatron's rule; got 6 % 4 = 2)");
  EXPECT_EQ(message(ScheduleKind::kInterleaved, 4, 8, 1),
            "interleaved needs chunks >= 2 per rank (got 1); use 1f1b for one chunk");
  EXPECT_EQ(message(ScheduleKind::k1F1B, 4, 8, 3),
            "1f1b holds 1 chunk(s) per rank (got chunks=3); only interleaved takes a chunk count");
  EXPECT_EQ(message(ScheduleKind::kGpipe, 0, 8, 0), "gpipe needs pp >= 1 (got pp=0)");
  EXPECT_EQ(message(ScheduleKind::kZb1p, 2, 0, 0), "zb1p needs micro_batches >= 1 (got 0)");
  EXPECT_NO_THROW(generate(ScheduleKind::kDualPipe, 4, 8, 2));  // v = the kind's own is accepted
  EXPECT_FALSE(precondition_violation(ScheduleKind::kDualPipeV, 1, 2).has_value());
}

TEST(ScheduleGenerators, ParseScheduleKind) {
  for (ScheduleKind kind : kAllScheduleKinds) EXPECT_EQ(parse_schedule_kind(schedule_kind_name(kind)), kind);
  EXPECT_EQ(parse_schedule_kind("DualPipe"), ScheduleKind::kDualPipe);
  try {
    parse_schedule_kind("zigzag");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    EXPECT_NE(e.message().find("unknown schedule kind 'zigzag'"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("dualpipev"), std::string::npos);
  }
}

// Every generator over P in 1..16 and M in 1..64 wherever its preconditions hold: the validator
// passes (coverage, p2p, order, no deadlock) and an independent count sees each piece once.
TEST(ScheduleGenerators, GridIsValidAndEachOpAppearsOnce) {
  int generated = 0;
  for (ScheduleKind kind : kAllScheduleKinds) {
    for (int p = 1; p <= 16; ++p) {
      for (int m = 1; m <= 64; ++m) {
        for (int v : kind == ScheduleKind::kInterleaved ? std::vector<int>{2, 3, 4} : std::vector<int>{0}) {
          if (precondition_violation(kind, p, m, v)) continue;
          const Schedule s = generate(kind, p, m, v);
          ++generated;
          const ValidationReport report = validate(s);
          ASSERT_TRUE(report.ok()) << schedule_kind_name(kind) << " P=" << p << " M=" << m << " v=" << v << "\n"
                                   << report.summary();
          ASSERT_EQ(testing::count_problem(s), "") << schedule_kind_name(kind) << " P=" << p << " M=" << m;
        }
      }
    }
  }
  // gpipe/1f1b/zb1p: 3 * 16 * 64; interleaved: 3 chunk counts * (M divisible by P); dualpipe(v).
  EXPECT_GT(generated, 3500);
}

// The executor may use one FIFO channel per (peer, tensor kind): every generated schedule sends
// each kind of tensor between two ranks in the order the receiver receives it. (One channel per
// peer would not do: DualPipe's activations and gradients between two ranks cross.)
TEST(ScheduleGenerators, PerTensorChannelsAreFifo) {
  for (ScheduleKind kind : kAllScheduleKinds) {
    for (int p = 1; p <= 8; ++p) {
      for (int m = 1; m <= 32; ++m) {
        const int v = kind == ScheduleKind::kInterleaved ? 3 : 0;
        if (precondition_violation(kind, p, m, v)) continue;
        const Schedule s = generate(kind, p, m, v);
        const auto problem = channel_order_problem(s);
        ASSERT_FALSE(problem.has_value()) << schedule_kind_name(kind) << " P=" << p << " M=" << m << ": " << *problem;
      }
    }
  }
  // A hand-made order that crosses two activations on one channel is reported.
  const Schedule crossed = schedule_from_ops("0: F0 F1 BW0 BW1\n1: F1 F0 BW0 BW1\n", ScheduleKind::k1F1B, 2);
  const auto problem = channel_order_problem(crossed);
  ASSERT_TRUE(problem.has_value());
  EXPECT_EQ(*problem, "activation channel rank 0 -> rank 1: message 0 sent is mb 0 from stage 0, received is mb 1 "
                      "from stage 0");
}

TEST(ScheduleGenerators, OneRankWorksWhereItMakesSense) {
  for (ScheduleKind kind : {ScheduleKind::kGpipe, ScheduleKind::k1F1B, ScheduleKind::kZb1p, ScheduleKind::kInterleaved,
                            ScheduleKind::kDualPipeV}) {
    const Schedule s = generate(kind, 1, 4);
    EXPECT_TRUE(validate(s).ok()) << schedule_kind_name(kind) << validate(s).summary();
  }
  EXPECT_EQ(render_ops(generate(ScheduleKind::kDualPipeV, 1, 2)),
            "0: F0.0 F0.1 F1.0 BW0.1 F1.1+BW0.0 BW1.1 B1.0 W1.0\n");
}

}  // namespace
}  // namespace tandem::schedule
