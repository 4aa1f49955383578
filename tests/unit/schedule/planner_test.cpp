// Planner: every applicable kind gets a row; memory columns match docs/dualpipe.md#costs-and-memory.
#include <gtest/gtest.h>

#include <map>

#include "schedule/planner.h"

namespace tandem::schedule {
namespace {

CostModelFactory unit_costs() {
  return [](const Schedule&) { return CostModel(); };
}

TEST(SchedulePlanner, EveryApplicableKindGetsARow) {
  const std::vector<CompareRow> rows = compare_schedules(4, 8, 2, unit_costs());
  ASSERT_EQ(rows.size(), 6u);
  std::map<ScheduleKind, CompareRow> by_kind;
  for (const CompareRow& r : rows) by_kind[r.kind] = r;
  EXPECT_EQ(by_kind[ScheduleKind::k1F1B].max_bubble, 9);
  EXPECT_EQ(by_kind[ScheduleKind::k1F1B].param_units, 1);
  EXPECT_EQ(by_kind[ScheduleKind::k1F1B].activation_units, 4);
  EXPECT_EQ(by_kind[ScheduleKind::kZb1p].max_bubble, 3);
  EXPECT_EQ(by_kind[ScheduleKind::kDualPipe].max_bubble, 2);
  EXPECT_EQ(by_kind[ScheduleKind::kDualPipe].param_units, 2);
  EXPECT_EQ(by_kind[ScheduleKind::kDualPipe].activation_units, 5);
  EXPECT_EQ(by_kind[ScheduleKind::kDualPipeV].param_chunks, 2);
  EXPECT_EQ(by_kind[ScheduleKind::kDualPipeV].param_units, 1);
  EXPECT_EQ(by_kind[ScheduleKind::kInterleaved].num_stages, 8);
  // Odd P, few micro-batches: dualpipe and interleaved drop out, dualpipev needs M >= 2P.
  const std::vector<CompareRow> odd = compare_schedules(3, 4, 1, unit_costs());
  ASSERT_EQ(odd.size(), 3u);
  const std::string table = render_compare_table(rows);
  EXPECT_NE(table.find("dualpipev"), std::string::npos) << table;
}

TEST(SchedulePlanner, WorkFactorySplitsPerSchedule) {
  HardwareSpec hw;
  hw.tflops = 1000;  // 1 TFLOP = 1 ms
  const CostModelFactory factory = work_cost_factory(StageWork{8, 8, 8, 0, 0}, hw);
  const std::vector<CompareRow> rows = compare_schedules(4, 8, 2, factory);
  for (const CompareRow& r : rows) {
    // Whole-model busy time per rank is 8 micro-batches * 24 ms / 4 ranks = 48 ms for every kind
    // (DualPipe holds two stages of a 4-stage split but runs each micro-batch on only one).
    EXPECT_GE(r.makespan, 48) << schedule_kind_name(r.kind);
    EXPECT_LT(r.makespan, 48 * 1.8) << schedule_kind_name(r.kind);
  }
}

}  // namespace
}  // namespace tandem::schedule
