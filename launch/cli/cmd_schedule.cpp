// `tandem schedule`: generate, validate, simulate and render one pipeline schedule, e.g.
//   tandem schedule --kind dualpipe --pp 8 --micro-batches 20 --format svg --out dualpipe.svg
// Every rank does the work (it is cheap and keeps ranks in step); only rank 0 prints or writes.
// Bad input (unknown kind or format, a schedule rule broken, a malformed cost string) throws
// tandem::Error(kConfig), which the top-level handler turns into exit code 2.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>

#include "launch/cli/command.h"
#include "runtime/error.h"
#include "runtime/process_context.h"
#include "schedule/cost_model.h"
#include "schedule/generators.h"
#include "schedule/render.h"
#include "schedule/simulator.h"
#include "schedule/validator.h"

namespace tandem::launch {

namespace {
struct ScheduleOptions {
  std::string kind;
  int pp = 0;
  int micro_batches = 0;
  int chunks = 0;  // 0: the kind's default (2 for interleaved)
  std::string cost;
  std::string format = "ops";
  std::string out;
};
}  // namespace

CommandRunner add_schedule_command(CLI::App& app) {
  auto opts = std::make_shared<ScheduleOptions>();
  CLI::App* cmd = app.add_subcommand("schedule", "Generate, validate, simulate and draw a pipeline schedule");
  cmd->add_option("--kind", opts->kind, "gpipe, 1f1b, interleaved, zb1p, dualpipe or dualpipev")->required();
  cmd->add_option("--pp", opts->pp, "pipeline ranks P")->required();
  cmd->add_option("--micro-batches", opts->micro_batches, "micro-batches per optimizer step M")->required();
  cmd->add_option("--chunks", opts->chunks, "stages per rank, interleaved only (default 2)");
  cmd->add_option("--cost", opts->cost,
                  "op costs: F, B (input-grad part), W, FB (overlapped pair, default F+B+W), P2P, A2A; "
                  "e.g. F=1,B=1,W=1,FB=3,P2P=0,A2A=0");
  cmd->add_option("--format", opts->format, "ops, table, json, chrome or svg")->capture_default_str();
  cmd->add_option("--out", opts->out, "write to FILE instead of stdout");

  return [opts](const CommandEnv& env) -> int {
    // Parse every argument before any work, so the first error is about what the user typed.
    const schedule::ScheduleKind kind = schedule::parse_schedule_kind(opts->kind);
    const schedule::OutputFormat format = schedule::parse_output_format(opts->format);
    const schedule::CostModel costs = schedule::parse_cost_string(opts->cost);
    const schedule::Schedule plan = schedule::generate(kind, opts->pp, opts->micro_batches, opts->chunks);
    // A generated schedule that fails validation is a bug in tandem, not in the input.
    schedule::check_valid(plan, ErrorKind::kInternal);
    const schedule::SimResult result = schedule::simulate(plan, costs);
    if (env.process.rank == 0) {
      schedule::write_output(schedule::render(format, plan, result, &costs), opts->out, std::cout);
    }
    return 0;
  };
}

}  // namespace tandem::launch
