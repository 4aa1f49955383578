// StepRunner: how one optimizer step's forward and backward run on this rank, behind one
// interface, so the trainer's loop is the same for every layout. Two runners:
//  - the flat runner (pp = 1, one stage per rank): the whole model (its tp/ep shards), micro-
//    batches one after the other, the data-parallel optimizer reducing gradient buckets while
//    backward fills them (flat_runner.cpp);
//  - the pipeline runner: this rank's stages run by the schedule executor (pipeline_runner.h).
// Both compute their losses with the job's objective (model/objective.h). Every method that says
// "collective" is called on every rank of the job in the same order. Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "launch/config/job_config.h"
#include "launch/train/training_device.h"
#include "model/parallel_groups.h"
#include "parallel/param_sharding.h"

namespace tandem::model {
class Objective;
}
namespace tandem::parallel {
class DataParallelOptimizer;
class ProcessGrid;
}  // namespace tandem::parallel

namespace tandem::launch {

// Loss values of one step: means over this data-parallel rank's micro-batches, the same on every
// rank of its model replica (tp, ep and pp peers).
struct StepLosses {
  double loss = 0;      // what was differentiated
  double lm_loss = 0;   // next-token cross-entropy of the main head
  double mtp_loss = 0;  // weighted multi-token-prediction loss
  double aux_loss = 0;  // sequence-wise balance loss
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;

  // This rank's parameters (local shards under global names), in a fixed order; the optimizer
  // takes over their storage.
  virtual std::vector<parallel::ShardedParam> sharded_parameters() const = 0;
  // [sharded_parameters() index] false: a copy of a parameter that another pipeline slot stands
  // for in norms and checkpoints. Empty: every parameter counts.
  virtual std::vector<bool> counted_parameters() const = 0;
  // Called once, after `optimizer` took over the parameters and before the first step. Throws
  // kConfig for a ZeRO stage this runner cannot drive.
  virtual void attach(parallel::DataParallelOptimizer& optimizer) = 0;

  // Collective: forward and backward of one step over this dp rank's micro-batches ([B, T+1]
  // int64 on the run device), each micro-batch's loss with gradient 1 / micro-batches. On return
  // every gradient of the step is computed here; reductions over dp may still be in flight
  // (DataParallelOptimizer::finish_gradient_sync). `step` is the 1-based optimizer step.
  virtual StepLosses forward_backward(const std::vector<at::Tensor>& micro_batches, int64_t step) = 0;
  // Collective: mean LM loss of `micro_batches` in eval mode (no autograd), the same on every rank
  // of the model replica; back in training mode on return.
  virtual double evaluate(const std::vector<at::Tensor>& micro_batches) = 0;

  // Tokens this rank routed per expert since the last update ([N + D, E] int64, rows of layers
  // held elsewhere zero); the global counts are the sum over the world.
  virtual at::Tensor expert_load() const = 0;
  // The auxiliary-loss-free bias update from the global counts (a no-op without routed experts);
  // resets the loads.
  virtual void update_routing_bias(const at::Tensor& counts) = 0;
  // Buffers (routing biases) under their global names: every local copy (what a checkpoint is
  // loaded into), or with `stored_only` the ones this rank writes, so the job writes each once.
  virtual std::vector<std::pair<std::string, at::Tensor>> named_buffers(bool stored_only) const = 0;
};

// The runner for `config`: the pipeline runner when uses_pipeline(config), else the flat one.
// Builds this rank's model part over `groups` on `device` (parameters from the seed, as in every
// layout), computing its losses with `objective`. Throws kConfig for unsupported layouts.
std::unique_ptr<StepRunner> make_step_runner(const JobConfig& config, const parallel::ProcessGrid& grid,
                                             const model::ParallelGroups& groups, const TrainingDevice& device,
                                             std::shared_ptr<const model::Objective> objective);

}  // namespace tandem::launch
