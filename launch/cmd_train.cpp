// `tandem train JOB.yaml [--set key=value ...]`: set-up on every rank (config, data, layout),
// the set-up agreement, then the process grid and the training loop (launch/trainer.h).
#include <CLI/CLI.hpp>

#include <chrono>
#include <memory>

#include "launch/command.h"
#include "launch/config_loader.h"
#include "launch/trainer.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/process_grid.h"
#include "runtime/log.h"
#include "runtime/process_context.h"
#include "runtime/signal_watcher.h"

namespace tandem::launch {
namespace {
struct TrainOptions {
  std::string job_path;
  std::vector<std::string> overrides;
  int64_t comm_timeout_s = 300;
};
}  // namespace

CommandRunner add_train_command(CLI::App& app) {
  auto options = std::make_shared<TrainOptions>();
  CLI::App* command = app.add_subcommand("train", "Train a model as the job file says");
  command->add_option("job", options->job_path, "Job YAML file")->required();
  command->add_option("--set", options->overrides, "Override a key: --set train.steps=20 (repeatable)");
  command->add_option("--comm-timeout", options->comm_timeout_s,
                      "Seconds a collective may wait for peers before the job is aborted")
      ->check(CLI::PositiveNumber);
  return [options](const CommandEnv& env) {
    env.signals.set_graceful(true);  // a stop signal ends the run after the step, with a checkpoint
    JobConfig config = load_job_config(options->job_path, options->overrides, env.process.world_size);
    runtime::init_logging(env.process, {config.logging.level, config.logging.all_ranks, ""});
    Trainer trainer(config, env.process, env.signals);
    env.setup.pass();
    parallel::CommunicatorFactory factory = parallel::mpi_communicator_factory(std::chrono::seconds(options->comm_timeout_s));
    if (trainer.uses_gpu()) factory = parallel::host_staged_factory(std::move(factory));
    const parallel::ProcessGrid grid(
        parallel::GridLayout::create(env.process.world_size, config.parallel.pp, config.parallel.dp,
                                     config.parallel.tp, config.parallel.ep, config.parallel.order),
        env.process, factory);
    return trainer.run(grid);
  };
}

}  // namespace tandem::launch
