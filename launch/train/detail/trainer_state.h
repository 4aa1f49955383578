// Internal to the trainer (trainer.cpp, trainer_checkpoint.cpp): the state of one training run.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "launch/config/job_config.h"
#include "launch/train/pipeline_runner.h"
#include "launch/train/trainer.h"
#include "model/model.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/exchange_recorder.h"
#include "parallel/process_grid.h"
#include "runtime/data/gpt_sampler.h"
#include "runtime/data/indexed_dataset.h"
#include "runtime/metrics_writer.h"
#include "runtime/process_context.h"
#include "runtime/signal_watcher.h"
#include "runtime/tensorboard_writer.h"

namespace tandem::launch {

struct Trainer::State {
  JobConfig config;
  const runtime::ProcessContext& process;
  const runtime::SignalWatcher& signals;
  const parallel::ProcessGrid* grid = nullptr;

  std::shared_ptr<const runtime::IndexedDataset> train_data;
  std::shared_ptr<const runtime::IndexedDataset> valid_data;
  std::unique_ptr<runtime::GptSampler> train_sampler;
  std::unique_ptr<runtime::GptSampler> valid_sampler;

  std::unique_ptr<model::Model> model;              // pp = 1: the whole model (its tp/ep shards)
  std::unique_ptr<PipelineRunner> pipeline;         // pipeline jobs (uses_pipeline): this rank's stages
  // Owns the parameters' storage, their gradient reduction (ZeRO 0-3) and AdamW.
  std::unique_ptr<parallel::DataParallelOptimizer> optimizer;
  // ep > 1 with logging.trace_steps: records the model's expert all-to-alls during traced steps
  // (its ep communicator is wrapped by make_recording_communicator); null otherwise.
  parallel::ExchangeRecorderPtr exchanges;

  std::unique_ptr<runtime::MetricsWriter> metrics;        // rank 0
  std::unique_ptr<runtime::TensorBoardWriter> tensorboard;  // rank 0, when enabled

  at::Device device{at::kCPU};  // run.device resolved (the GPU of this rank's local index)
  bool bf16 = false;           // bf16 autocast around forward; parameters/gradients stay fp32

  int64_t step = 0;            // optimizer steps completed
  int64_t micro_batches = 1;   // per optimizer step and dp rank
  std::string checkpoint_root;

  State(JobConfig job, const runtime::ProcessContext& context, const runtime::SignalWatcher& watcher)
      : config(std::move(job)), process(context), signals(watcher) {}
};

// This dp rank's next micro-batch of `sampler` ([micro_batch_size, T+1] token ids on the run
// device), for both paths (trainer_pipeline.cpp).
at::Tensor next_micro_batch(const Trainer::State& state, runtime::GptSampler& sampler);

// The pipeline path (trainer_pipeline.cpp), for jobs where uses_pipeline(config).
// What this build's pipeline path cannot run, rejected at set-up with the key and the reason.
void check_pipeline_supported(const JobConfig& config);
// Warns about logging.trace_steps that will not be traced (no pipeline and no expert
// parallelism, or after train.steps).
void warn_untraced_steps(const JobConfig& config);
// Whether logging.trace_steps names `step`.
bool is_traced_step(const JobConfig& config, int64_t step);
// After a traced step with state.exchanges: writes this rank's expert all-to-alls of the step to
// run.output_dir/traces/stepN/exchanges/rankR.json (parallel::exchange_trace_json).
void write_exchange_trace(Trainer::State& state, int64_t step);
// One step's forward and backward through the schedule over this dp rank's next micro-batches:
// returns [loss, lm, mtp, aux], means over those micro-batches (fp64, CPU, equal on every rank of
// the pipeline); every gradient of the step is complete on this rank, summed over the pipeline's
// copies of a parameter, not yet reduced over dp. Collective over the world.
at::Tensor pipeline_forward_backward(Trainer::State& state, int64_t step);
// Mean LM loss of this dp rank's `count` next validation micro-batches through the pipeline, on
// every rank of the pipeline. Collective.
double pipeline_evaluate(Trainer::State& state, int64_t count);

// The model part of this rank, whichever path (Model, or the pipeline's stages).
at::Tensor local_expert_load(const Trainer::State& state);            // see Stage::expert_load
void update_routing_bias(Trainer::State& state, const at::Tensor& counts);  // and resets the loads
// Buffers (routing biases) under global names: every local copy, or with `stored_only` the ones
// this rank writes into checkpoints (the job writes each once).
std::vector<std::pair<std::string, at::Tensor>> model_buffers(const Trainer::State& state, bool stored_only);

// Checkpointing (trainer_checkpoint.cpp). Collective over the world.
// Saves params, optimizer moments, routing biases, step, optimizer step count and sampler state.
void save_checkpoint(Trainer::State& state);
// Restores from checkpoint.resume (auto: latest valid, if any; none; or a directory). Returns the
// step resumed from, or nullopt when starting fresh.
std::optional<int64_t> maybe_resume(Trainer::State& state);

}  // namespace tandem::launch
