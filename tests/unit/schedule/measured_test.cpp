// Measured timelines: the per-rank JSON round trip, assembling a step from per-rank files, and the
// comparison with a re-simulation. A "measurement" here is a simulated timeline shifted to another
// clock origin, so its re-simulation under the per-op times it implies must reproduce it exactly.
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "schedule/generators.h"
#include "schedule/measured.h"

namespace tandem::schedule {
namespace {

// Splits a simulated run into the per-rank files the trainer writes, times offset by `origin`.
std::vector<RankTimeline> as_rank_files(const Schedule& s, const SimResult& sim, double origin, int64_t step) {
  std::vector<RankTimeline> files;
  for (int r = 0; r < s.num_ranks; ++r) {
    RankTimeline t{s.kind, s.num_ranks, s.num_microbatches, s.num_chunks, step, r, 0, 0, s.ranks[r], {}};
    for (const OpTime& time : sim.timeline.ranks[r]) t.times.push_back({time.start + origin, time.end + origin});
    files.push_back(std::move(t));
  }
  return files;
}

TEST(MeasuredTimeline, JsonRoundTripIsExact) {
  const Schedule s = generate(ScheduleKind::kDualPipeV, 2, 4);
  const SimResult sim = simulate(s, parse_cost_string("F=1.1,B=1.3,W=0.7,P2P=0.01"));
  for (const RankTimeline& t : as_rank_files(s, sim, 123456.789, 7)) {
    const std::string text = rank_timeline_to_json(t);
    const RankTimeline back = rank_timeline_from_json(text);
    EXPECT_EQ(back.ops, t.ops);
    EXPECT_EQ(back.times, t.times) << text;
    EXPECT_EQ(back.step, 7);
    EXPECT_EQ(back.pp_rank, t.pp_rank);
    EXPECT_EQ(rank_timeline_to_json(back), text);
  }
}

TEST(MeasuredTimeline, AssembledStepResimulatesToItself) {
  for (ScheduleKind kind : kAllScheduleKinds) {
    const Schedule s = generate(kind, 4, 8);
    // Per-slot costs differ (a slow last stage), so the cost model really comes from the samples.
    CostModel costs(OpCosts{.f = 1, .b = 1.5, .w = 0.5});
    costs.set_stage(s.num_stages - 1, OpCosts{.f = 2, .b = 2.5, .w = 1});
    const SimResult sim = simulate(s, costs);
    std::vector<RankTimeline> files = as_rank_files(s, sim, 5000, 3);
    std::reverse(files.begin(), files.end());  // any file order
    const MeasuredStep step = assemble_measured_step(files);
    EXPECT_EQ(step.schedule, s);
    EXPECT_EQ(step.step, 3);
    for (int r = 0; r < s.num_ranks; ++r) {
      for (std::size_t i = 0; i < s.ranks[r].size(); ++i) {
        EXPECT_DOUBLE_EQ(step.timeline.ranks[r][i].start, sim.timeline.ranks[r][i].start);
      }
    }
    const MeasuredComparison cmp = compare_measured(step);
    EXPECT_NEAR(cmp.measured.makespan, sim.makespan, 1e-9) << schedule_kind_name(kind);
    EXPECT_NEAR(cmp.simulated.makespan, sim.makespan, 1e-9) << schedule_kind_name(kind);
    for (int r = 0; r < s.num_ranks; ++r) {
      EXPECT_NEAR(cmp.simulated.ranks[r].bubble_fraction, cmp.measured.ranks[r].bubble_fraction, 1e-9);
    }
    EXPECT_NE(cmp.table.find("bubble"), std::string::npos);
    EXPECT_NE(cmp.chrome.find("measured step 3"), std::string::npos);
    EXPECT_NE(cmp.chrome.find("simulated with the measured op times"), std::string::npos);
    EXPECT_NE(cmp.svg.find("<svg"), std::string::npos);
  }
}

TEST(MeasuredTimeline, BadFilesAreInputErrors) {
  const Schedule s = generate(ScheduleKind::k1F1B, 2, 4);
  const SimResult sim = simulate(s);
  std::vector<RankTimeline> files = as_rank_files(s, sim, 0, 1);
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInput) << e.message();
      return e.message();
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { assemble_measured_step(std::span(files).first(1)); }).find("pp rank 1 is missing"),
            std::string::npos);
  std::vector<RankTimeline> twice = {files[0], files[0]};
  EXPECT_NE(message([&] { assemble_measured_step(twice); }).find("two timelines of pp rank 0"), std::string::npos);
  std::vector<RankTimeline> other_step = files;
  other_step[1].step = 2;
  EXPECT_NE(message([&] { assemble_measured_step(other_step); }).find("different runs"), std::string::npos);
  std::vector<RankTimeline> dropped = files;
  dropped[1].ops.pop_back();
  dropped[1].times.pop_back();
  EXPECT_NE(message([&] { assemble_measured_step(dropped); }), "no error");
  EXPECT_NE(message([] { rank_timeline_from_json(R"({"format": "other"})"); }).find("tandem-timeline"),
            std::string::npos);
  EXPECT_NE(message([] {
              rank_timeline_from_json(R"({"format": "tandem-timeline", "kind": "1f1b", "num_ranks": 2,
                "num_microbatches": 2, "num_chunks": 1, "step": 1, "pp_rank": 0, "dp_rank": 0, "tp_rank": 0,
                "ops": [{"token": "F0", "start": 2, "end": 1}]})");
            }).find("ends before it starts"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem::schedule
