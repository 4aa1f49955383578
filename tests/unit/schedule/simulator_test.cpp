// Simulator: the closed forms of docs/dualpipe.md#costs-and-memory reproduced exactly (F = B = W = 1, zero
// latency), peak live activations, the overlap model, latency, per-stage costs, and summaries of
// measured timelines.
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/error.h"
#include "schedule/generators.h"
#include "schedule/json_io.h"
#include "schedule/simulator.h"

namespace tandem::schedule {
namespace {

constexpr double kF = 1, kB = 1, kW = 1;  // the unit costs the closed forms are stated for

CostModel with_fb(double fb) {
  OpCosts c;
  c.fb = fb;
  return CostModel(c);
}

TEST(ScheduleClosedForms, OneFOneB) {
  for (int p = 1; p <= 16; ++p) {
    for (int m = 1; m <= 64; ++m) {
      const SimResult r = simulate(generate(ScheduleKind::k1F1B, p, m));
      ASSERT_EQ(r.max_bubble(), (p - 1) * (kF + kB + kW)) << "P=" << p << " M=" << m;
      ASSERT_EQ(r.ranks[0].peak_live_chunks, std::min(p, m)) << "P=" << p << " M=" << m;
      ASSERT_EQ(r.max_peak_live_chunks(), std::min(p, m));
    }
  }
}

TEST(ScheduleClosedForms, ZeroBubbleH1) {
  // (P-1)(F+B-W) with B the input-grad part; the report's (P-1)(F+B'-2W) with B' = B+W. It needs
  // M >= P: with fewer micro-batches there are not P-1 weight gradients to fill the drain (P=2,
  // M=1 cannot beat F B | B W on the critical path), and the bubble lies between ZB-H1's and 1F1B's.
  for (int p = 1; p <= 16; ++p) {
    for (int m = 1; m <= 64; ++m) {
      const SimResult r = simulate(generate(ScheduleKind::kZb1p, p, m));
      if (m >= p) {
        ASSERT_EQ(r.max_bubble(), (p - 1) * (kF + kB - kW)) << "P=" << p << " M=" << m;
      } else {
        ASSERT_GT(r.max_bubble(), (p - 1) * (kF + kB - kW)) << "P=" << p << " M=" << m;
        ASSERT_LT(r.max_bubble(), (p - 1) * (kF + kB + kW)) << "P=" << p << " M=" << m;
      }
      ASSERT_EQ(r.max_peak_live_chunks(), std::min(p, m)) << "same activation memory as 1F1B; P=" << p << " M=" << m;
    }
  }
}

TEST(ScheduleClosedForms, GPipeAndInterleaved) {
  for (int p = 1; p <= 16; ++p) {
    for (int m = 1; m <= 64; ++m) {
      const SimResult g = simulate(generate(ScheduleKind::kGpipe, p, m));
      ASSERT_EQ(g.max_bubble(), (p - 1) * (kF + kB + kW)) << "gpipe P=" << p << " M=" << m;
      ASSERT_EQ(g.max_peak_live_chunks(), m);
      if (m % p != 0) continue;
      for (int v = 2; v <= 4; ++v) {
        // Costs are per chunk (1/v of a stage), so (P-1)(F+BW)/v in stage units is
        // (P-1)(F+BW) in chunk units.
        const SimResult i = simulate(generate(ScheduleKind::kInterleaved, p, m, v));
        ASSERT_EQ(i.max_bubble(), (p - 1) * (kF + kB + kW)) << "interleaved P=" << p << " M=" << m << " v=" << v;
      }
    }
  }
}

// (P/2-1)(FB+B+W-3W) is the bubble of the middle ranks for every FB >= B+W (a pair cannot be
// shorter than its backward half). It is the largest per-rank bubble while overlapping pays,
// FB <= F+B+W. Beyond that, a rank h away from the middle runs (P/2-2-h) fewer pairs, each
// costing FB-(F+B+W) more than its two halves alone, so the edge ranks' bubble is larger by
// (P/2-2)(FB-(F+B+W)).
TEST(ScheduleClosedForms, DualPipeForManyPairTimes) {
  for (double fb : {2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 7.0}) {
    for (int p = 2; p <= 16; p += 2) {
      for (int m = 2 * p; m <= 64; m += 2) {
        const SimResult r = simulate(generate(ScheduleKind::kDualPipe, p, m), with_fb(fb));
        const double closed = (p / 2 - 1) * (fb + kB + kW - 3 * kW);
        ASSERT_EQ(r.ranks[static_cast<std::size_t>(p / 2 - 1)].bubble, closed)
            << "P=" << p << " M=" << m << " FB=" << fb;
        ASSERT_EQ(r.ranks[static_cast<std::size_t>(p / 2)].bubble, closed) << "P=" << p << " M=" << m << " FB=" << fb;
        const double extra = std::max(0, p / 2 - 2) * std::max(0.0, fb - (kF + kB + kW));
        ASSERT_EQ(r.max_bubble(), closed + extra) << "P=" << p << " M=" << m << " FB=" << fb;
        for (const RankStats& rank : r.ranks) ASSERT_EQ(rank.peak_live_chunks, p + 1) << "P=" << p << " M=" << m;
        for (const RankStats& rank : r.ranks) ASSERT_EQ(rank.param_chunks, 2);
      }
    }
  }
}

TEST(ScheduleClosedForms, DualPipeDefaultPairTimeIsFPlusBPlusW) {
  const SimResult r = simulate(generate(ScheduleKind::kDualPipe, 8, 20));
  EXPECT_EQ(r.max_bubble(), 3 * (kF + kB + kW + kB + kW - 3 * kW));
}

TEST(ScheduleSimulator, OverlapModelHidesAllToAll) {
  // One rank, one F+BW pair between warm-up and drain: P=1 dualpipev "F0.0 F0.1 F1.0 BW0.1
  // F1.1+BW0.0 BW1.1 B1.0 W1.0". With A2A = 1 inside F and B (compute 1 each):
  //   F alone = 2, BW alone = B + W + A2A = 3, B alone = 2, W = 1,
  //   pair F+BW = max(F_c, BW_a2a) + max(BW_c, F_a2a) = max(1, 1) + max(2, 1) = 3.
  const Schedule s = generate(ScheduleKind::kDualPipeV, 1, 2);
  const SimResult r = simulate(s, parse_cost_string("A2A=1"));
  std::vector<double> durations;
  for (const OpTime& t : r.timeline.ranks[0]) durations.push_back(t.end - t.start);
  EXPECT_EQ(durations, (std::vector<double>{2, 2, 2, 3, 3, 3, 2, 1}));
  EXPECT_EQ(r.makespan, 18);
  EXPECT_EQ(r.ranks[0].bubble, 0);
}

TEST(ScheduleSimulator, ExplicitPairTime) {
  EXPECT_EQ(pair_time(OpCosts{1, 1, 1, 0, 0, std::nullopt, 2.5}, {OpKind::kF, 0, 0}, OpCosts{}, {OpKind::kBW, 1, 0}),
            2.5);
  // An F+B pair (W queued) is the F+BW pair minus W.
  EXPECT_EQ(pair_time(OpCosts{1, 1, 1, 0, 0, std::nullopt, 2.5}, {OpKind::kF, 0, 0}, OpCosts{}, {OpKind::kB, 1, 0}),
            1.5);
  // Without FB: the overlap formula, here with all-to-all as large as compute: fully hidden.
  const OpCosts moe{1, 1, 1, 1, 1, std::nullopt, std::nullopt};
  EXPECT_EQ(piece_time(moe, OpKind::kF), 2);
  EXPECT_EQ(piece_time(moe, OpKind::kBW), 3);
  EXPECT_EQ(pair_time(moe, {OpKind::kF, 0, 0}, moe, {OpKind::kBW, 1, 0}), 3);
}

TEST(ScheduleSimulator, LatencyAndPerStageCosts) {
  // 1F1B, P=2, M=1: F(r0) -> send -> F(r1) -> BW(r1) -> send -> BW(r0).
  const Schedule s = generate(ScheduleKind::k1F1B, 2, 1);
  EXPECT_EQ(simulate(s).makespan, 6);
  EXPECT_EQ(simulate(s, parse_cost_string("P2P=0.5")).makespan, 7);
  CostModel heavy_head;  // the last stage (output head) costs double
  heavy_head.set_stage(1, OpCosts{2, 2, 2, 0, 0, std::nullopt, std::nullopt});
  EXPECT_EQ(simulate(s, heavy_head).makespan, 1 + 2 + 4 + 2);
  CostModel slot;  // a slot override wins over a stage override
  slot.set_stage(1, OpCosts{2, 2, 2, 0, 0, std::nullopt, std::nullopt});
  slot.set_slot(1, 0, OpCosts{3, 1, 1, 0, 0, std::nullopt, std::nullopt});
  EXPECT_EQ(simulate(s, slot).makespan, 1 + 3 + 2 + 2);
}

TEST(ScheduleSimulator, PeakLiveCountsDeferredWeightGradients) {
  // B without W keeps the activation: F0 F1 B0 B1 W0 W1 on one rank peaks at 2, and stays live
  // until the W's.
  const Schedule s = schedule_from_ops("0: F0 F1 B0 B1 W0 W1\n", ScheduleKind::kZb1p, 2);
  EXPECT_EQ(simulate(s).ranks[0].peak_live_chunks, 2);
  const Schedule t = schedule_from_ops("0: F0 B0 W0 F1 B1 W1\n", ScheduleKind::kZb1p, 2);
  EXPECT_EQ(simulate(t).ranks[0].peak_live_chunks, 1);
}

TEST(ScheduleSimulator, DeadlockThrowsInputError) {
  const Schedule s = schedule_from_ops("0: F0 BW0 F1 BW1\n1: F1 F0 BW0 BW1\n", ScheduleKind::k1F1B, 2);
  try {
    simulate(s);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInput);
    EXPECT_NE(e.message().find("deadlock"), std::string::npos);
  }
}

TEST(ScheduleSimulator, SummarizeAMeasuredTimeline) {
  const Schedule s = schedule_from_ops("0: F0 BW0\n1: F0 BW0\n", ScheduleKind::k1F1B, 1);
  Timeline measured;
  measured.ranks = {{{100, 101.5}, {106, 108}}, {{102, 103}, {103, 105.5}}};
  const SimResult r = summarize(s, measured);
  EXPECT_EQ(r.origin, 100);
  EXPECT_EQ(r.makespan, 8);
  EXPECT_EQ(r.ranks[0].busy, 3.5);
  EXPECT_EQ(r.ranks[0].bubble, 4.5);
  EXPECT_EQ(r.ranks[1].busy, 3.5);
  measured.ranks[1].pop_back();
  EXPECT_THROW(summarize(s, measured), Error);
}

TEST(ScheduleSimulator, CostModelFromMeasuredSamples) {
  const std::vector<OpSample> samples = {
      {0, 0, OpKind::kF, false, 1.0}, {0, 0, OpKind::kF, false, 3.0},  {0, 0, OpKind::kBW, false, 5.0},
      {1, 0, OpKind::kF, false, 1.5}, {1, 0, OpKind::kBW, false, 2.5},
  };
  const CostModel model = cost_model_from_samples(samples, OpCosts{}, 0.25);
  const auto slots = model.resolve(placement_for(ScheduleKind::k1F1B, 2, 1, 1));
  EXPECT_EQ(slots[0].f, 2.0);
  EXPECT_EQ(piece_time(slots[0], OpKind::kBW), 5.0);
  EXPECT_EQ(slots[1].f, 1.5);
  // F(r0) 2 + 0.25 + F(r1) 1.5 + BW(r1) 2.5 + 0.25 + BW(r0) 5
  EXPECT_EQ(simulate(generate(ScheduleKind::k1F1B, 2, 1), model).makespan, 11.5);
}

TEST(ScheduleSimulator, ScalesLinearly) {
  // The bench target (P=64, M=1024) must stay in the tens of milliseconds; here only check that
  // it runs and is exact.
  const SimResult r = simulate(generate(ScheduleKind::kDualPipe, 64, 1024));
  EXPECT_EQ(r.max_bubble(), 31 * 2);
  EXPECT_EQ(r.max_peak_live_chunks(), 65);
}

}  // namespace
}  // namespace tandem::schedule
