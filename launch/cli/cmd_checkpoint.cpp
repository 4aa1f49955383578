// `tandem checkpoint inspect DIR [--json] [--no-verify]`: prints a checkpoint's manifest (step,
// layout, model, tensors, files with checksums) and verifies every shard file. Exit 0 when every
// file is intact, 2 (bad input) naming each bad file otherwise. Runs on rank 0 only.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "launch/cli/command.h"
#include "launch/export/checkpoint_inspect.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

struct InspectOptions {
  std::string path;
  bool json = false;
  bool no_verify = false;
};

int run_inspect(const InspectOptions& options) {
  const InspectReport report = inspect_checkpoint(options.path, !options.no_verify);
  const std::string text = options.json ? render_inspect_json(report) : render_inspect_text(report);
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  const std::vector<std::string> problems = report.problems();
  TANDEM_CHECK_INPUT(problems.empty(), "checkpoint {} is damaged: {}", report.dir, fmt::join(problems, "; "));
  return 0;
}

}  // namespace

CommandRunner add_checkpoint_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* command = app.add_subcommand("checkpoint", "Checkpoint tools");
  command->require_subcommand(1);
  CLI::App* inspect = command->add_subcommand("inspect", "Print a checkpoint's manifest and verify its files");
  inspect->add_option("dir", options->path, "Checkpoint step directory, or a checkpoint root (uses latest)")
      ->required();
  inspect->add_flag("--json", options->json, "Print the report as one JSON object");
  inspect->add_flag("--no-verify", options->no_verify, "Check file sizes only, not CRC-32C checksums (fast)");
  return [options](const CommandEnv& env) {
    if (!env.process.is_root()) return 0;
    return run_inspect(*options);
  };
}

}  // namespace tandem::launch
