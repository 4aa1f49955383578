// Schedule core throughput: generate + validate + simulate of DualPipe at P=64, M=1024
// (~100k ops; the goal is under 50 ms on the 2-core dev machine), plus each step alone and the
// other kinds at the same size, so a regression points at its stage.
#include <benchmark/benchmark.h>

#include "schedule/generators.h"
#include "schedule/simulator.h"
#include "schedule/validator.h"

namespace tandem::schedule {
namespace {

constexpr int kRanks = 64;
constexpr int kMicroBatches = 1024;

void BM_DualPipeGenerateValidateSimulate(benchmark::State& state) {
  for (auto _ : state) {
    const Schedule s = generate(ScheduleKind::kDualPipe, kRanks, kMicroBatches);
    const ValidationReport report = validate(s);
    if (!report.ok()) state.SkipWithError("invalid schedule");
    const SimResult result = simulate(s);
    double makespan = result.makespan;
    benchmark::DoNotOptimize(makespan);
    state.counters["ops"] = static_cast<double>(s.num_ops());
  }
  state.SetLabel("dualpipe P=64 M=1024");
}
BENCHMARK(BM_DualPipeGenerateValidateSimulate)->Unit(benchmark::kMillisecond);

void BM_Generate(benchmark::State& state) {
  const auto kind = static_cast<ScheduleKind>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(generate(kind, kRanks, kMicroBatches, 0).num_ops());
  state.SetLabel(std::string(schedule_kind_name(kind)));
}

void BM_Validate(benchmark::State& state) {
  const auto kind = static_cast<ScheduleKind>(state.range(0));
  const Schedule s = generate(kind, kRanks, kMicroBatches, 0);
  for (auto _ : state) benchmark::DoNotOptimize(validate(s).ok());
  state.SetLabel(std::string(schedule_kind_name(kind)));
}

void BM_Simulate(benchmark::State& state) {
  const auto kind = static_cast<ScheduleKind>(state.range(0));
  const Schedule s = generate(kind, kRanks, kMicroBatches, 0);
  for (auto _ : state) benchmark::DoNotOptimize(simulate(s).makespan);
  state.SetLabel(std::string(schedule_kind_name(kind)));
}

void kinds(benchmark::internal::Benchmark* b) {
  for (ScheduleKind kind : kAllScheduleKinds) b->Arg(static_cast<int>(kind));
  b->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_Generate)->Apply(kinds);
BENCHMARK(BM_Validate)->Apply(kinds);
BENCHMARK(BM_Simulate)->Apply(kinds);

}  // namespace
}  // namespace tandem::schedule

BENCHMARK_MAIN();
