// `tandem train JOB.yaml [--set key=value ...]`: set-up on every rank (config, data, layout),
// the set-up agreement, then the process grid and the training loop (launch/train/trainer.h).
// Communication (parallel.backend): MPI, with device tensors staged through the host on GPU runs
// (mpi, and auto for now); or on GPU runs NCCL for device tensors and MPI for host ones
// (nccl: parallel/device_routed_communicator.h), except the pipeline group, whose executor needs
// MPI's tag matching (NCCL matches point-to-point messages in issue order), and any group in which
// two ranks share a GPU (several ranks per GPU, e.g. pp2 x dp2 x ep2 on 2 GPUs: NCCL refuses it),
// which stay host-staged MPI.
#include <CLI/CLI.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "launch/cli/command.h"
#include "launch/config/config_loader.h"
#include "launch/train/run_directory.h"
#include "launch/train/trainer.h"
#include "parallel/device_routed_communicator.h"
#include "parallel/host_staged_communicator.h"
#include "parallel/nccl_communicator.h"
#include "parallel/process_grid.h"
#include "runtime/device.h"
#include "runtime/log.h"
#include "runtime/process_context.h"
#include "runtime/signal_watcher.h"

namespace tandem::launch {
namespace {
struct TrainOptions {
  std::string job_path;
  std::vector<std::string> overrides;
  int64_t comm_timeout_s = 300;
  bool overwrite = false;
  bool verbose = false;
};

// The communicator factory for this run (see the file comment).
// `device`: this rank's CUDA device index on GPU runs.
parallel::CommunicatorFactory communicator_factory(parallel::BackendKind backend, std::chrono::seconds timeout,
                                                   bool gpu, int device) {
  parallel::CommunicatorFactory mpi = parallel::mpi_communicator_factory(timeout);
  if (!gpu) {
    TANDEM_CHECK_CONFIG(backend != parallel::BackendKind::kNccl,
                        "parallel.backend: nccl needs a GPU run (run.device cuda, or auto with a GPU); this run is on "
                        "the CPU, use mpi or auto");
    return mpi;
  }
  parallel::CommunicatorFactory staged = parallel::host_staged_factory(mpi);
  if (backend != parallel::BackendKind::kNccl) return staged;
  TANDEM_CHECK_CONFIG(parallel::nccl_backend_available(),
                      "parallel.backend: nccl, but this build has no NCCL backend (configure with the CUDA toolkit "
                      "and NCCL); use mpi");
  parallel::CommunicatorFactory routed =
      parallel::device_routed_factory(std::move(mpi), parallel::nccl_communicator_factory(timeout));
  return [staged = std::move(staged), routed = std::move(routed), device](parallel::GroupKind kind, MPI_Comm comm,
                                                                          const std::string& name) {
    if (kind == parallel::GroupKind::kPipeline) return staged(kind, comm, name);
    if (parallel::group_shares_a_device(comm, device)) {
      int rank = 0;
      MPI_Comm_rank(comm, &rank);
      if (rank == 0) {
        TANDEM_LOG_INFO("train", "group {}: ranks of it share a GPU, which NCCL refuses; it uses host-staged MPI",
                        name);
      }
      return staged(kind, comm, name);
    }
    return routed(kind, comm, name);
  };
}
}  // namespace

CommandRunner add_train_command(CLI::App& app) {
  auto options = std::make_shared<TrainOptions>();
  CLI::App* command = app.add_subcommand("train", "Train a model as the job file says");
  command->add_option("job", options->job_path, "Job YAML file")->required();
  command->add_option("--set", options->overrides, "Override a key: --set train.steps=20 (repeatable)");
  command
      ->add_option("--comm-timeout", options->comm_timeout_s,
                   "Seconds a collective may wait for peers before the job is aborted")
      ->check(CLI::PositiveNumber);
  command->add_flag("--overwrite", options->overwrite,
                    "Start afresh even if run.output_dir holds another run, deleting its metrics, TensorBoard "
                    "events, traces and checkpoints (same as --set run.overwrite=true)");
  command->add_flag("--verbose", options->verbose,
                    "Also log the resolved config (it is always written to run.output_dir/config.resolved.yaml)");
  return [options](const CommandEnv& env) {
    env.signals.set_graceful(true);  // a stop signal ends the run after the step, with a checkpoint
    std::vector<std::string> overrides = options->overrides;
    if (options->overwrite) overrides.emplace_back("run.overwrite=true");
    if (env.process.world_size == 1) {
      // Started as one process (no mpirun): say how to start a job that lays out several ranks,
      // rather than only that a world of 1 does not divide by its pp.
      const int64_t own = job_file_world(options->job_path, overrides);
      TANDEM_CHECK_CONFIG(
          own == 1,
          "{}: this job lays out {} ranks (parallel.pp * tp * dp) but runs as one process; start "
          "it with `mpirun -np {} build/bin/tandem train {} ...` (add --oversubscribe when the "
          "machine has fewer cores), or lay it out for one process (parallel.pp, tp and dp 1, schedule 1f1b)",
          options->job_path, own, own, options->job_path);
    }
    JobConfig config = load_job_config(options->job_path, overrides, env.process.world_size);
    runtime::init_logging(env.process, {config.logging.level, config.logging.all_ranks, ""});
    Trainer trainer(config, env.process, env.signals, TrainerOptions{options->verbose});
    // Rank 0 decides whether this run may use its directory (only it writes metrics), before the
    // agreement, so that a refusal exits 2 on every rank before anything is written.
    RunDirectoryPlan plan;
    if (env.process.is_root()) plan = check_run_directory(config);
    const int device = trainer.uses_gpu() ? runtime::select_device_for_local_rank(env.process.local_rank) : -1;
    const parallel::CommunicatorFactory factory = communicator_factory(
        config.parallel.backend, std::chrono::seconds(options->comm_timeout_s), trainer.uses_gpu(), device);
    env.setup.pass();
    // Before the grid: no rank writes into the directory until the grid's collectives include rank 0.
    if (plan.clear) clear_run_directory(config);
    for (const std::string& note : plan.notes) TANDEM_LOG_INFO("train", "{}", note);
    const parallel::ProcessGrid grid(parallel::GridLayout::create(env.process.world_size, config.parallel.pp,
                                                                  config.parallel.dp, config.parallel.tp,
                                                                  config.parallel.ep, config.parallel.order),
                                     env.process, factory);
    return trainer.run(grid);
  };
}

}  // namespace tandem::launch
