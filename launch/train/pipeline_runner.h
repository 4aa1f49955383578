// PipelineRunner: the step runner of pipeline-parallel jobs (step_runner.h). Builds this rank's
// stages for the job's schedule (parallel.pipeline.schedule over parallel.pp ranks, two stages
// per rank for DualPipe/DualPipeV, virtual_stages for interleaved), runs each step's forward and
// backward through the schedule executor (schedule/executor/executor.h), evaluates through the
// pipeline and sums losses over the pp group (expert loads are summed over its chunks; the
// trainer sums them over the world). For logging.trace_steps it writes every rank's measured op
// timeline (run.output_dir/traces/stepN/rankR.json) and, on global rank 0, the measured pipeline
// next to its re-simulation (compare.svg, compare.chrome.json, a bubble table in the log).
// Gradients are reduced over dp after the schedule's last backward (ZeRO 0 and 1 only). The pp
// group needs a tag-matching backend (MPI, host-staged on GPUs), not NCCL.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "launch/train/step_runner.h"

namespace tandem::model {
class Stage;
}
namespace tandem::schedule {
class PipelineExecutor;
}

namespace tandem::launch {

// What the pipeline path cannot run, rejected at set-up with the key and the reason (throws
// kConfig); a no-op for jobs that do not use the pipeline.
void check_pipeline_supported(const JobConfig& config);

class PipelineRunner final : public StepRunner {
 public:
  // Builds the stages of this rank (parameters initialised from the seed, as in every layout) on
  // `device`. Throws config errors for layouts the stages do not support.
  PipelineRunner(const JobConfig& config, const parallel::ProcessGrid& grid, const model::ParallelGroups& groups,
                 const TrainingDevice& device, std::shared_ptr<const model::Objective> objective);
  ~PipelineRunner() override;
  PipelineRunner(const PipelineRunner&) = delete;
  PipelineRunner& operator=(const PipelineRunner&) = delete;

  // Every chunk's parameters in chunk order. A parameter held by several pipeline slots
  // (DualPipe's two copies of a stage, the embedding of the first and last stages) appears once
  // per local copy; only the primary copy (PipelineExecutor::is_primary) counts.
  std::vector<parallel::ShardedParam> sharded_parameters() const override;
  std::vector<bool> counted_parameters() const override;
  void attach(parallel::DataParallelOptimizer& optimizer) override;
  StepLosses forward_backward(const std::vector<at::Tensor>& micro_batches, int64_t step) override;
  double evaluate(const std::vector<at::Tensor>& micro_batches) override;
  at::Tensor expert_load() const override;
  void update_routing_bias(const at::Tensor& counts) override;
  // Stored once per job: by the primary holder of each stage (ReplicaGradSync::is_primary), on
  // the first data- and tensor-parallel replica (buffers are identical over dp, tp and ep).
  std::vector<std::pair<std::string, at::Tensor>> named_buffers(bool stored_only) const override;

  const std::vector<std::shared_ptr<model::Stage>>& chunks() const { return chunks_; }

 private:
  void train(bool on);
  void write_trace(int64_t step, const std::vector<double>& op_times_ms);

  const JobConfig& config_;
  const parallel::ProcessGrid& grid_;
  std::vector<std::shared_ptr<model::Stage>> chunks_;
  std::unique_ptr<schedule::PipelineExecutor> executor_;
};

}  // namespace tandem::launch
