// PipelineRunner: the pipeline-parallel part of the trainer. Builds this rank's stages for the
// job's schedule (parallel.pipeline.schedule over parallel.pp ranks, parallel.pipeline.
// micro_batches per step; two stages per rank for DualPipe/DualPipeV, virtual_stages for
// interleaved), runs one optimizer step's forward/backward through the schedule executor
// (schedule/executor/executor.h), evaluates through the pipeline, aggregates losses and expert loads
// over the pp group, and for logging.trace_steps writes every rank's measured op timeline
// (run.output_dir/traces/stepN/rankR.json) plus, on global rank 0, the measured pipeline next
// to its re-simulation (compare.svg, compare.chrome.json, bubble table in the log).
// Not thread-safe; one per rank. Every method that says "collective" must be called on every
// rank of the job in the same order.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "launch/config/job_config.h"
#include "model/parallel_groups.h"
#include "parallel/param_sharding.h"

namespace tandem::model {
class Stage;
}
namespace tandem::parallel {
class ProcessGrid;
}
namespace tandem::schedule {
class PipelineExecutor;
}

namespace tandem::launch {

// Whether the job runs through the pipeline executor: more than one pipeline rank, or a schedule
// that places several stages on one rank (dualpipev, interleaved with pp = 1).
bool uses_pipeline(const JobConfig& config);

class PipelineRunner {
 public:
  // Builds the stages of this rank (parameters initialised from the seed, as every layout is) on
  // `device` (fp32 master weights; `bf16` runs the forwards under bf16 autocast). Throws config
  // errors for layouts the stages do not support.
  PipelineRunner(const JobConfig& config, const parallel::ProcessGrid& grid, const model::ParallelGroups& groups,
                 const at::Device& device = at::kCPU, bool bf16 = false);
  ~PipelineRunner();
  PipelineRunner(const PipelineRunner&) = delete;
  PipelineRunner& operator=(const PipelineRunner&) = delete;

  const std::vector<std::shared_ptr<model::Stage>>& chunks() const { return chunks_; }
  // Every chunk's parameters in chunk order. A parameter held by several pipeline slots
  // (DualPipe's two copies of a stage, the embedding of the first and last stages) appears once
  // per local copy; only the primary copy (is_primary) stands for it in norms and checkpoints.
  std::vector<parallel::ShardedParam> sharded_parameters() const;
  std::vector<bool> primary_flags() const;  // [sharded_parameters() index]
  // Buffers (routing biases) under their global names: every local copy (what a checkpoint is
  // loaded into), or with `stored_only` those this rank writes into a checkpoint, so that the job
  // writes each once: the primary copy of the stage (see ReplicaGradSync::is_primary), on the first data-
  // and tensor-parallel replica (buffers are identical over dp, tp and ep).
  std::vector<std::pair<std::string, at::Tensor>> named_buffers(bool stored_only) const;

  struct Losses {
    double loss = 0, lm_loss = 0, mtp_loss = 0, aux_loss = 0;  // means over this dp rank's micro-batches
  };
  // Collective: one step's forward and backward over `micro_batches` (this dp rank's share) with
  // gradient 1/M per micro-batch; on return every gradient of the step is complete on this rank
  // and summed over pipeline copies (the data-parallel reduction is the caller's). `step` is the
  // optimizer step (1-based), for logging.trace_steps.
  Losses train_step(const std::vector<at::Tensor>& micro_batches, int64_t step);
  // Collective: mean LM loss of `micro_batches` through the pipeline (eval mode), on every rank.
  double evaluate(const std::vector<at::Tensor>& micro_batches);

  // Tokens routed per expert by this rank's stages ([N + D, E], rows of other stages zero); the
  // global counts are the sum over the world.
  at::Tensor expert_load() const;
  void reset_expert_load();
  void update_routing_bias(const at::Tensor& counts);
  void train(bool on);

 private:
  void write_trace(int64_t step, const std::vector<double>& op_times_ms);

  const JobConfig& config_;
  const parallel::ProcessGrid& grid_;
  std::vector<std::shared_ptr<model::Stage>> chunks_;
  std::unique_ptr<schedule::PipelineExecutor> executor_;
};

}  // namespace tandem::launch
