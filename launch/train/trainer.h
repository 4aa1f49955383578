// Trainer: wires a job together and runs the training loop: data (GptSampler over a Megatron
// indexed dataset), model, AdamW with warm-up + cosine/constant LR and global-norm clipping,
// gradient accumulation over micro-batches, data-parallel gradient averaging, the
// auxiliary-loss-free routing-bias update from globally reduced expert loads, evaluation on the
// held-out split, checkpoints (atomic, verified, exact resume), and metrics (step line with
// progress and ETA, metrics.jsonl, TensorBoard). A SIGINT/SIGTERM on any rank stops every rank
// after the current step with a checkpoint and exit code 0.
// Device: the CPU in fp32, or this rank's GPU with bf16 autocast and fp32 master weights
// (run.device, train.precision).
// Layouts: any dp, tp (with or without sequence parallelism) and ep, flat (pp = 1) or through a
// pipeline schedule (step_runner.h); ZeRO 0-3 flat, 0-1 with a pipeline (rejected at set-up
// otherwise: check_pipeline_supported), all through parallel::DataParallelOptimizer (bucketed
// gradient reduction overlapping backward). Every layout trains like one process
// (tests/mpi/layout_matrix_test.sh, tests/mpi/train_pipeline_cli_test.sh) and checkpoints load
// under any other layout. Data is sharded by dp only: the tp ranks of a dp rank read the same
// samples; logged losses and metrics are identical on all ranks, written by rank 0.
// Not thread-safe; one per process. Collective: every rank of the job constructs one and calls
// run() (they issue the same collectives in the same order).
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

class Trainer {
 public:
  // Rank-local set-up that can fail on bad input (data files, layout support): call on every
  // rank BEFORE the set-up agreement (SetupGate::pass), so a bad dataset exits 2 everywhere.
  // Throws tandem::Error (kConfig / kInput).
  Trainer(JobConfig config, const runtime::ProcessContext& process, const runtime::SignalWatcher& signals);
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
