// The training loop (see trainer.h). Set-up builds the parts in the order the collectives need
// them; each step then runs train_step (forward/backward, gradient synchronisation, clipping,
// AdamW, routing-bias update), evaluate_if_due, the report and end_of_step (stop signal and
// checkpoint), in that order on every rank.
#include "launch/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <chrono>
#include <cmath>

#include "launch/config/config_loader.h"
#include "launch/plan/memory_estimate.h"
#include "launch/train/checkpoint_weights.h"
#include "launch/train/checkpointer.h"
#include "launch/train/lr_schedule.h"
#include "launch/train/pipeline_runner.h"
#include "launch/train/step_logger.h"
#include "launch/train/step_runner.h"
#include "launch/train/step_tracing.h"
#include "launch/train/training_data.h"
#include "launch/train/training_device.h"
#include "model/init.h"
#include "model/model_size.h"
#include "model/objective.h"
#include "model/stage.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/expert_dispatch.h"
#include "parallel/grid_layout.h"
#include "parallel/process_grid.h"
#include "runtime/device.h"
#include "runtime/file_util.h"
#include "runtime/log.h"
#include "runtime/placement_check.h"
#include "runtime/process_context.h"
#include "runtime/signal_watcher.h"

namespace tandem::launch {
namespace {

using parallel::GroupKind;
using parallel::ReduceOp;

// The model's groups on this rank of the grid.
model::ParallelGroups model_groups(const parallel::ProcessGrid& grid, bool sequence_parallel) {
  model::ParallelGroups groups;
  groups.tp = grid.shared(GroupKind::kTensor);
  groups.ep = grid.shared(GroupKind::kExpert);
  groups.edp = grid.shared(GroupKind::kExpertData);
  groups.dp = grid.shared(GroupKind::kData);
  groups.sequence_parallel = sequence_parallel;
  return groups;
}

// `counted[i]` false: parameter i is a pipeline copy another slot stands for (StepRunner).
parallel::DataParallelOptions optimizer_options(const JobConfig& config, std::vector<bool> counted) {
  parallel::DataParallelOptions options;
  options.zero_stage = config.parallel.zero;
  options.bucket_mb = config.parallel.grad_bucket_mb;
  options.adamw =
      parallel::AdamWConfig{config.optim.beta1, config.optim.beta2, config.optim.eps, config.optim.weight_decay};
  options.decays = model::takes_weight_decay;
  options.counted = std::move(counted);
  return options;
}

// The loss the job trains with: next-token prediction (pretraining).
std::shared_ptr<const model::Objective> job_objective(const JobConfig& /*config*/) {
  return model::default_objective();
}

}  // namespace

struct Trainer::State {
  JobConfig config;
  const runtime::ProcessContext& process;
  const runtime::SignalWatcher& signals;
  TrainerOptions options;
  TrainingDevice device;
  TrainingData data;
  StepTracing tracing;
  // checkpoint.init_from, verified at set-up; its weights start the model (before any resume).
  std::optional<runtime::LoadedCheckpoint> init_weights;
  int threads = 1;   // intra-op threads of this rank
  int64_t step = 0;  // optimizer steps completed

  // Built by run() over the grid.
  const parallel::ProcessGrid* grid = nullptr;
  std::unique_ptr<StepRunner> runner;
  // Owns the parameters' storage, their gradient reduction (ZeRO 0-3) and AdamW.
  std::unique_ptr<parallel::DataParallelOptimizer> optimizer;
  std::unique_ptr<Checkpointer> checkpoints;
  std::unique_ptr<StepLogger> logger;

  State(JobConfig job, const runtime::ProcessContext& context, const runtime::SignalWatcher& watcher,
        const parallel::GridLayout& layout)
      : config(std::move(job)),
        process(context),
        signals(watcher),
        device(resolve_training_device(config, context.local_rank, context.host)),
        data(config, layout.coord(context.rank).dp, layout.dp_size()),
        tracing(config, context.rank, device.device.is_cuda() ? device.device.index() : -1) {
    if (!config.checkpoint.init_from.empty()) {
      init_weights = load_weights_checkpoint(config.checkpoint.init_from, "checkpoint.init_from");
    }
  }

  void set_up(const parallel::ProcessGrid& grid);
  void log_start() const;
  void log_model(int64_t local_params) const;
  CheckpointedState checkpointed() { return {*optimizer, *runner, data.training_sampler()}; }
  StepRecord train_step(int64_t step);
  std::optional<double> evaluate_if_due(int64_t step);
  bool end_of_step(int64_t step);  // true: stop now
};

Trainer::Trainer(JobConfig config, const runtime::ProcessContext& process, const runtime::SignalWatcher& signals,
                 TrainerOptions options) {
  check_pipeline_supported(config);  // what the pipeline path cannot run
  const auto layout = parallel::GridLayout::create(process.world_size, config.parallel.pp, config.parallel.dp,
                                                   config.parallel.tp, config.parallel.ep, config.parallel.order);
  state_ = std::make_unique<State>(std::move(config), process, signals, layout);
  state_->options = options;
}

Trainer::~Trainer() = default;

bool Trainer::uses_gpu() const { return state_->device.device.is_cuda(); }

int Trainer::run(const parallel::ProcessGrid& grid) {
  State& s = *state_;
  s.set_up(grid);
  const auto run_start = std::chrono::steady_clock::now();
  while (s.step < s.config.train.steps) {
    const auto step_start = std::chrono::steady_clock::now();
    const int64_t step = s.step + 1;
    StepRecord record = s.train_step(step);
    s.step = step;
    record.eval_loss = s.evaluate_if_due(step);
    s.logger->log(record, std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count());
    if (s.end_of_step(step)) break;
  }
  s.logger->flush();
  if (s.process.is_root()) {
    TANDEM_LOG_INFO("train", "done: {} steps in {:.1f} s", s.step,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count());
  }
  return 0;
}

void Trainer::State::set_up(const parallel::ProcessGrid& job_grid) {
  grid = &job_grid;
  threads = runtime::threads_per_rank(process.local_size);
  at::set_num_threads(threads);
  runtime::log_rank_placement(process, config.run.device, threads);
  if (process.is_root()) log_start();

  // The model holds this rank's shards (tp slices, its ep share of the experts) under global
  // names; the optimizer takes over their storage, bucketed by replication group (dense over dp,
  // experts over expert-dp) and sharded over those replicas under ZeRO.
  model::ParallelGroups groups = model_groups(job_grid, config.parallel.sequence_parallel);
  tracing.instrument(groups);
  runner = make_step_runner(config, job_grid, groups, device, job_objective(config));
  const std::vector<parallel::ShardedParam> params = runner->sharded_parameters();
  if (init_weights) {
    // Before the optimizer copies the parameters into its buffers; a resume below overrides them.
    load_weights(*init_weights, params, runner->named_buffers(/*stored_only=*/false));
    if (process.is_root()) {
      TANDEM_LOG_INFO("train",
                      "checkpoint.init_from: weights of step {} from {} (optimizer, step and data start fresh)",
                      init_weights->step, init_weights->dir);
    }
    init_weights.reset();  // the reader's mappings are no longer needed
  }
  int64_t local_params = 0;  // counted before ZeRO-3 releases the storage
  for (const parallel::ShardedParam& p : params) local_params += p.param.numel();
  optimizer =
      std::make_unique<parallel::DataParallelOptimizer>(params, parallel::DataParallelGroups::from_grid(job_grid),
                                                        optimizer_options(config, runner->counted_parameters()));
  runner->attach(*optimizer);
  if (process.is_root()) log_model(local_params);

  checkpoints = std::make_unique<Checkpointer>(config, process, job_grid.world());
  const std::optional<int64_t> resumed = checkpoints->resume(checkpointed());
  step = resumed.value_or(0);
  const double peak_flops = device.device.is_cuda()
                                ? config.hardware.gpu_tflops * 1e12 * process.world_size
                                : config.hardware.cpu_gflops_per_core * 1e9 * threads * process.world_size;
  logger = std::make_unique<StepLogger>(config, process, resumed, peak_flops);
}

void Trainer::State::log_start() const {
  TANDEM_LOG_INFO("train", "tandem {} | LibTorch {} | {}", TANDEM_VERSION_STRING, TORCH_VERSION, TANDEM_GIT_SHA);
  // The resolved config is long (every key): kept with the run's outputs, printed on request.
  const std::string resolved = job_config_to_yaml(config);
  const std::string resolved_path = config.run.output_dir + "/config.resolved.yaml";
  runtime::make_directories(config.run.output_dir);
  runtime::write_file_atomic(resolved_path, resolved);
  if (options.print_config) TANDEM_LOG_INFO("train", "resolved config:\n{}", resolved);
  else TANDEM_LOG_INFO("train", "resolved config: {} (--verbose prints it)", resolved_path);
  TANDEM_LOG_INFO("train", "layout:\n{}", grid->layout().describe());
  for (const std::string& line : data.describe()) TANDEM_LOG_INFO("data", "{}", line);
  note_untraced_steps(config);
}

void Trainer::State::log_model(int64_t local_params) const {
  const model::ModelSize size = model::compute_model_size(config.model);
  TANDEM_LOG_INFO("train",
                  "model: {} parameters ({} main, {} MTP), {} activated per token; {} on rank 0; {} threads "
                  "per rank",
                  size.total_params + size.mtp_params, size.total_params, size.mtp_params, size.activated_params,
                  local_params, threads);
  TANDEM_LOG_INFO("train", "device {} | {} | communication over {}", device.device.str(),
                  device.bf16() ? "bf16 autocast, fp32 master weights and gradients" : "fp32", grid->dp().backend());
  const parallel::ParamMemory memory = optimizer->memory();
  TANDEM_LOG_INFO("train", "data parallel, ZeRO {} (rank 0: parameters {}, gradients {}, AdamW {}):\n{}",
                  config.parallel.zero, format_bytes(static_cast<double>(memory.param_bytes)),
                  format_bytes(static_cast<double>(memory.grad_bytes)),
                  format_bytes(static_cast<double>(memory.optimizer_bytes)), optimizer->describe());
}

StepRecord Trainer::State::train_step(int64_t step) {
  StepRecord record;
  record.step = step;
  record.lr = learning_rate(config.optim, step, config.train.steps);
  optimizer->zero_grad();
  tracing.begin_step(step);
  record.losses =
      runner->forward_backward(data.next_training(config.parallel.pipeline.micro_batches, device.device), step);
  // The reductions share dp and the other groups with the collectives below: done first.
  optimizer->finish_gradient_sync();
  tracing.end_step(step);

  // Losses: every tp (and pp) rank of a dp rank holds the same values; average over dp.
  at::Tensor losses = at::tensor(
      {record.losses.loss, record.losses.lm_loss, record.losses.mtp_loss, record.losses.aux_loss}, at::kDouble);
  if (grid->dp().size() > 1) grid->dp().all_reduce(losses, ReduceOp::kAvg);
  record.losses = {losses[0].item<double>(), losses[1].item<double>(), losses[2].item<double>(),
                   losses[3].item<double>()};
  TANDEM_CHECK_KIND(kRuntime, std::isfinite(record.losses.loss),
                    "step {}: the loss is {}; lower optim.lr or check the data", step, record.losses.loss);
  // Expert loads: each rank counted the tokens it routed through its layers; the world together
  // routed every token of every layer once (rows of layers a rank does not hold are zero).
  const at::Tensor load = parallel::all_reduce_expert_counts(runner->expert_load(), grid->world());

  record.grad_norm = optimizer->global_grad_norm();
  TANDEM_CHECK_KIND(kRuntime, std::isfinite(record.grad_norm),
                    "step {}: the gradient norm is {}; lower optim.lr or check the data", step, record.grad_norm);
  optimizer->step(record.lr, parallel::clip_scale(record.grad_norm, config.optim.grad_clip));
  runner->update_routing_bias(load);
  if (config.model.n_routed_experts > 0) record.expert_imbalance = model::load_imbalance(load);
  return record;
}

std::optional<double> Trainer::State::evaluate_if_due(int64_t step) {
  const int64_t every = config.train.eval_interval;
  if (every <= 0 || (step % every != 0 && step != config.train.steps)) return std::nullopt;
  // The held-out split (lm loss only): eval_steps global batches, split over dp like training
  // batches, so every layout evaluates the same samples.
  const int64_t count = config.train.eval_steps * config.parallel.pipeline.micro_batches;
  at::Tensor mean = at::tensor({runner->evaluate(data.validation(count, device.device))}, at::kDouble);
  if (grid->dp().size() > 1) grid->dp().all_reduce(mean, ReduceOp::kAvg);
  return mean.item<double>();
}

bool Trainer::State::end_of_step(int64_t done) {
  // A stop request on any rank stops every rank after this step.
  at::Tensor stop = at::tensor({signals.stop_requested() ? 1 : 0}, at::kInt);
  grid->world().all_reduce(stop, ReduceOp::kMax);
  const bool stopping = stop.item<int>() != 0;
  const bool interval_due = config.checkpoint.interval > 0 && done % config.checkpoint.interval == 0;
  const bool last = done == config.train.steps;
  if (interval_due || ((last || stopping) && config.checkpoint.save_on_exit)) checkpoints->save(done, checkpointed());
  if (stopping && process.is_root())
    TANDEM_LOG_WARN("train", "stopped by signal after step {}; checkpoint written", done);
  return stopping;
}

}  // namespace tandem::launch
