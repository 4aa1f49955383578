// Trainer: runs a job's training loop. Set-up wires the parts (launch/train/*): the data
// (training_data.h), the device and precision (training_device.h), a step runner for the layout
// (step_runner.h: flat, or pipeline through the schedule executor) with the job's objective, the
// data-parallel optimizer (AdamW over ZeRO 0-3 buckets, parallel/data_parallel_optimizer.h),
// checkpoints (checkpointer.h) and step reports (step_logger.h). Each step: forward and backward
// over the dp rank's micro-batches, gradient synchronisation, global-norm clipping and AdamW, the
// auxiliary-loss-free routing-bias update from the global expert loads, evaluation when due, a
// report, then a checkpoint when due. A SIGINT/SIGTERM on any rank stops every rank after the
// current step with a checkpoint and exit code 0.
// Every layout trains like one process (tests/mpi/layout_matrix_test.sh); checkpoints load under
// any other layout. Not thread-safe; one per process. Collective: every rank of the job
// constructs one and calls run() (they issue the same collectives in the same order).
#pragma once

#include <memory>

#include "launch/config/job_config.h"

namespace tandem::parallel {
class ProcessGrid;
}
namespace tandem::runtime {
struct ProcessContext;
class SignalWatcher;
}  // namespace tandem::runtime

namespace tandem::launch {

struct TrainerOptions {
  // Log the resolved config at start (rank 0 always writes it to run.output_dir/config.resolved.yaml).
  bool print_config = false;
};

class Trainer {
 public:
  // Rank-local set-up that can fail on bad input (data files, layout support, the device): call
  // on every rank BEFORE the set-up agreement (SetupGate::pass), so a bad dataset exits 2
  // everywhere. Throws tandem::Error (kConfig / kInput).
  Trainer(JobConfig config, const runtime::ProcessContext& process, const runtime::SignalWatcher& signals,
          TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Collective: builds the model and optimizer over `grid`, resumes if asked, trains to
  // train.steps or until a stop signal, and returns the exit code (0).
  int run(const parallel::ProcessGrid& grid);

  // True when this rank trains on a GPU (run.device resolved): the grid's communicators must then
  // move device tensors (NCCL, or the MPI backend through host staging).
  bool uses_gpu() const;

  struct State;  // defined in trainer.cpp

 private:
  std::unique_ptr<State> state_;
};

}  // namespace tandem::launch
