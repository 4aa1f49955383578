// The training loop (see trainer.h). Per optimizer step:
//   zero grads -> for each micro-batch: forward (loss pieces) and backward with gradient
//   1/micro_batches, the data-parallel optimizer reducing gradient buckets as backward fills
//   them (parallel/data_parallel_optimizer.h: partial-over-tp sums, dense average over dp, expert
//   sums over expert-dp; ZeRO 2/3 reduce-scatter every micro-batch) -> wait for the reductions
//   -> global norm, clip scale -> AdamW on this rank's ZeRO shard and the parameters gathered back
//   -> routing-bias update from the global expert loads -> metrics -> eval / checkpoint / stop.
// A pipeline job (pp > 1, or several stages per rank) runs the forward/backward and evaluation
// through the schedule executor instead (trainer_pipeline.cpp) and reduces its gradients after
// the schedule's last backward; the rest is shared.
#include "launch/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/version.h>

#include <cmath>
#include <cstdlib>
#include <thread>

#include "launch/config/config_loader.h"
#include "launch/train/detail/trainer_state.h"
#include "launch/train/kernel_trace.h"
#include "launch/train/lr_schedule.h"
#include "launch/plan/memory_estimate.h"
#include "model/autocast.h"
#include "model/init.h"
#include "model/model_size.h"
#include "parallel/expert_dispatch.h"
#include "parallel/grid_layout.h"
#include "runtime/device.h"
#include "runtime/file_util.h"
#include "runtime/log.h"
#include "runtime/placement_check.h"

namespace tandem::launch {
namespace {

using parallel::GroupKind;
using parallel::ReduceOp;

// run.device and train.precision resolved for this rank: auto means the GPU of this rank's
// node-local index when one is usable, and bf16 autocast there (fp32 on the CPU).
void resolve_placement(const JobConfig& config, const runtime::ProcessContext& process, at::Device& device,
                       bool& bf16) {
  const std::string& wanted = config.run.device;
  const bool gpu_usable = runtime::gpu_unavailable_reason().empty() && at::hasCUDA();
  if (wanted == "cuda") {
    TANDEM_CHECK_CONFIG(gpu_usable, "run.device: cuda, but no GPU is usable on {} ({}); use run.device=cpu or auto",
                        process.host,
                        at::hasCUDA() ? runtime::gpu_unavailable_reason() : "this LibTorch was built without CUDA");
  }
  device = at::Device(at::kCPU);
  if (wanted == "cuda" || (wanted == "auto" && gpu_usable)) {
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(runtime::select_device_for_local_rank(process.local_rank)));
  }
  // bf16 on the CPU is allowed (CPU autocast): slow, but it lets CI exercise the mixed-precision path.
  bf16 = config.train.precision == "bf16" || (config.train.precision == "auto" && device.is_cuda());
}

runtime::GptSamplerOptions sampler_options(const JobConfig& config, int64_t dp_rank, int64_t dp_size, bool train) {
  runtime::GptSamplerOptions options;
  options.seq_length = config.data.seq_length;
  options.seed = static_cast<uint64_t>(config.run.seed);
  options.dp_rank = dp_rank;
  options.dp_size = dp_size;
  options.vocab_size = config.model.vocab_size;
  options.shuffle = train;
  options.name = train ? "training split" : "validation split";
  options.config_key = train || config.data.valid_path.empty() ? "data.path" : "data.valid_path";
  return options;
}

bool decays(const std::string& name) {
  return !model::is_norm_weight(name) && name.find(".bias") == std::string::npos;
}

// [loss, lm, mtp, aux] of one micro-batch as one fp64 tensor on the loss's device (undefined = 0).
at::Tensor stacked_losses(const model::LossPieces& pieces) {
  const at::Tensor zero = at::zeros({}, pieces.loss.options().dtype(at::kDouble));
  auto piece = [&](const at::Tensor& t) { return t.defined() ? t.detach().to(at::kDouble) : zero; };
  return at::stack({piece(pieces.loss), piece(pieces.lm_loss), piece(pieces.mtp_loss), piece(pieces.aux_loss)});
}

// Mean over MoE layers of (max / mean) tokens per expert: 1.0 is perfectly balanced.
double load_imbalance(const at::Tensor& counts) {
  double sum = 0;
  int64_t layers = 0;
  const at::Tensor as_double = counts.to(at::kDouble);
  for (int64_t layer = 0; layer < as_double.size(0); ++layer) {
    const at::Tensor row = as_double[layer];
    const double mean = row.mean().item<double>();
    if (mean <= 0) continue;
    sum += row.max().item<double>() / mean;
    ++layers;
  }
  return layers > 0 ? sum / static_cast<double>(layers) : 1.0;
}

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, (total / 60) % 60, total % 60);
  return fmt::format("{}:{:02}", total / 60, total % 60);
}

std::string progress_bar(int64_t done, int64_t total) {
  constexpr int kWidth = 20;
  const auto filled = static_cast<int>(kWidth * done / std::max<int64_t>(total, 1));
  return "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kWidth - filled), '.') + "]";
}

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

// The global gradient norm and the clipped AdamW update (the gradients are synchronised).
// Collective over the world. Returns the gradient norm.
double optimizer_step(Trainer::State& s, double lr, int64_t step) {
  const double grad_norm = s.optimizer->global_grad_norm();
  TANDEM_CHECK_KIND(kRuntime, std::isfinite(grad_norm), "step {}: the gradient norm is {}; lower optim.lr or check the data",
                    step, grad_norm);
  s.optimizer->step(lr, parallel::clip_scale(grad_norm, s.config.optim.grad_clip));
  return grad_norm;
}

// `counted[i]` false: trained[i] is a pipeline copy another slot stands for (see PipelineRunner).
parallel::DataParallelOptions optimizer_options(const JobConfig& config, std::vector<bool> counted) {
  parallel::DataParallelOptions options;
  options.zero_stage = config.parallel.zero;
  options.bucket_mb = config.parallel.grad_bucket_mb;
  options.adamw =
      parallel::AdamWConfig{config.optim.beta1, config.optim.beta2, config.optim.eps, config.optim.weight_decay};
  options.decays = decays;
  options.counted = std::move(counted);
  return options;
}

}  // namespace

Trainer::Trainer(JobConfig config, const runtime::ProcessContext& process, const runtime::SignalWatcher& signals)
    : state_(std::make_unique<State>(std::move(config), process, signals)) {
  State& s = *state_;
  check_pipeline_supported(s.config);  // what the pipeline path cannot run yet
  const auto layout = parallel::GridLayout::create(process.world_size, s.config.parallel.pp, s.config.parallel.dp,
                                                   s.config.parallel.tp, s.config.parallel.ep, s.config.parallel.order);
  const int64_t dp_rank = layout.coord(process.rank).dp;
  const int64_t dp_size = layout.dp_size();
  s.micro_batches = s.config.parallel.pipeline.micro_batches;
  resolve_placement(s.config, process, s.device, s.bf16);

  // Data: opened and validated here so a missing or bad dataset fails set-up on every rank.
  s.train_data = std::make_shared<const runtime::IndexedDataset>(
      runtime::IndexedDataset::open(s.config.data.path, "data.path"));
  runtime::DocumentSplit split;
  if (s.config.data.valid_path.empty()) {
    split = runtime::split_documents(s.train_data->num_documents(), s.config.data.valid_fraction);
    s.valid_data = s.train_data;
  } else {
    split.train = runtime::all_documents(*s.train_data);
    s.valid_data = std::make_shared<const runtime::IndexedDataset>(
        runtime::IndexedDataset::open(s.config.data.valid_path, "data.valid_path"));
    split.valid = runtime::all_documents(*s.valid_data);
  }
  s.train_sampler = std::make_unique<runtime::GptSampler>(s.train_data, std::move(split.train),
                                                          sampler_options(s.config, dp_rank, dp_size, true));
  s.valid_sampler = std::make_unique<runtime::GptSampler>(s.valid_data, std::move(split.valid),
                                                          sampler_options(s.config, dp_rank, dp_size, false));
  s.checkpoint_root = s.config.checkpoint.dir.empty() ? s.config.run.output_dir + "/checkpoints" : s.config.checkpoint.dir;
}

Trainer::~Trainer() = default;

bool Trainer::uses_gpu() const { return state_->device.is_cuda(); }

int Trainer::run(const parallel::ProcessGrid& grid) {
  State& s = *state_;
  s.grid = &grid;
  const JobConfig& config = s.config;
  const bool root = s.process.is_root();

  // OMP_NUM_THREADS when the launcher set it (docs/launching.md), else one core's worth of
  // intra-op threads per rank on this node: more only oversubscribes.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const int omp_threads = omp ? std::atoi(omp) : 0;
  const int threads = omp_threads > 0 ? omp_threads : std::max(1, cores / std::max(1, s.process.local_size));
  at::set_num_threads(threads);
  runtime::log_rank_placement(s.process, config.run.device, threads);

  if (root) {
    TANDEM_LOG_INFO("train", "tandem {} | LibTorch {} | {}", TANDEM_VERSION_STRING, TORCH_VERSION, TANDEM_GIT_SHA);
    TANDEM_LOG_INFO("train", "resolved config:\n{}", job_config_to_yaml(config));
    TANDEM_LOG_INFO("train", "layout:\n{}", grid.layout().describe());
    TANDEM_LOG_INFO("data", "{}", s.train_sampler->describe());
    TANDEM_LOG_INFO("data", "{}", s.valid_sampler->describe());
    warn_untraced_steps(config);
  }

  // Built on the CPU (initialisation is a pure function of seed and name), then moved, before the
  // flat buffers are made: fp32 master weights on the run device; bf16 only inside autocast.
  parallel::Communicator& dp = grid.dp();
  parallel::Communicator& world = grid.world();
  // The model holds this rank's shards (tp slices, its ep share of the experts) under global names;
  // the data-parallel optimizer takes over their storage, bucketed by replication group (dense
  // over dp, experts over expert-dp) and sharded over those replicas under ZeRO. ZeRO-3 gathers
  // each decoder layer's parameters around its use through the model's layer hooks.
  model::ParallelGroups groups = model_groups(grid, config.parallel.sequence_parallel);
  if (!config.logging.trace_steps.empty() && groups.ep_size() > 1) {
    s.exchanges = std::make_shared<parallel::ExchangeRecorder>();
    groups.ep = parallel::make_recording_communicator(groups.ep, s.exchanges);
  }
  // A pipeline rank holds its stages; copies of a parameter on several pipeline slots are kept in
  // sync by the executor, and only the primary copy counts in norms and checkpoints.
  std::vector<parallel::ShardedParam> trained;
  std::vector<bool> counted;
  if (uses_pipeline(config)) {
    s.pipeline = std::make_unique<PipelineRunner>(config, grid, groups, s.device, s.bf16);
    trained = s.pipeline->sharded_parameters();
    counted = s.pipeline->primary_flags();
  } else {
    s.model = std::make_unique<model::Model>(config.model, static_cast<uint64_t>(config.run.seed), groups);
    s.model->to(s.device);
    s.model->train(true);
    trained = s.model->sharded_parameters();
  }
  int64_t local_numel = 0;
  for (const parallel::ShardedParam& p : trained) local_numel += p.param.numel();
  s.optimizer = std::make_unique<parallel::DataParallelOptimizer>(
      trained, parallel::DataParallelGroups::from_grid(grid), optimizer_options(config, std::move(counted)));
  if (config.parallel.zero == 3) s.model->set_layer_hooks(s.optimizer->layer_hooks());
  const model::ModelSize size = model::compute_model_size(config.model);
  if (root) {
    TANDEM_LOG_INFO("train", "model: {} parameters ({} main, {} MTP), {} activated per token; {} on rank 0; {} threads "
                    "per rank", size.total_params + size.mtp_params, size.total_params, size.mtp_params,
                    size.activated_params, local_numel, threads);
    TANDEM_LOG_INFO("train", "device {} | {} | communication over {}", s.device.str(),
                    s.bf16 ? "bf16 autocast, fp32 master weights and gradients" : "fp32", dp.backend());
    const parallel::ParamMemory memory = s.optimizer->memory();
    TANDEM_LOG_INFO("train", "data parallel, ZeRO {} (rank 0: parameters {}, gradients {}, AdamW {}):\n{}",
                    config.parallel.zero, format_bytes(static_cast<double>(memory.param_bytes)),
                    format_bytes(static_cast<double>(memory.grad_bytes)),
                    format_bytes(static_cast<double>(memory.optimizer_bytes)), s.optimizer->describe());
  }

  const std::optional<int64_t> resumed = maybe_resume(s);
  if (root) {
    runtime::make_directories(config.run.output_dir);
    s.metrics = std::make_unique<runtime::MetricsWriter>(config.run.output_dir + "/metrics.jsonl", resumed);
    if (config.logging.tensorboard) {
      s.tensorboard = std::make_unique<runtime::TensorBoardWriter>(config.run.output_dir + "/tensorboard", s.process.host);
    }
  }

  const int64_t tokens_per_step = config.data.global_batch_size * config.data.seq_length;
  const double flops_per_token = size.train_flops_per_token(config.data.seq_length);
  const double peak_flops = s.device.is_cuda() ? config.hardware.gpu_tflops * 1e12 * s.process.world_size
                                               : config.hardware.cpu_gflops_per_core * 1e9 * threads * s.process.world_size;
  const double loss_scale = 1.0 / static_cast<double>(s.micro_batches);
  const auto run_start = std::chrono::steady_clock::now();
  const int64_t first_step = s.step;

  while (s.step < config.train.steps) {
    const auto step_start = std::chrono::steady_clock::now();
    const int64_t step = s.step + 1;
    const double lr = learning_rate(config.optim, step, config.train.steps);
    s.optimizer->zero_grad();
    const bool trace_exchanges = s.exchanges && is_traced_step(config, step);
    if (trace_exchanges) s.exchanges->set_enabled(true);
    std::optional<KernelTrace> kernels;
    if (config.logging.trace_kernels && is_traced_step(config, step)) {
      kernels.emplace(s.device.is_cuda() ? s.device.index() : -1);
    }

    at::Tensor losses;
    if (s.pipeline) {
      losses = pipeline_forward_backward(s, step);
    } else {
      // Loss pieces accumulate on the device; one copy to the host per step (no sync per micro-batch).
      at::Tensor loss_sums = at::zeros({4}, at::TensorOptions().dtype(at::kDouble).device(s.device));
      for (int64_t micro = 0; micro < s.micro_batches; ++micro) {
        const at::Tensor tokens = next_micro_batch(s, *s.train_sampler);
        model::LossPieces pieces;
        {
          const model::AutocastScope autocast(s.device.type(), at::kBFloat16, s.bf16);
          pieces = s.model->forward_loss(tokens, loss_scale);
        }
        s.optimizer->begin_backward(/*final_backward=*/micro == s.micro_batches - 1);
        torch::autograd::backward({pieces.loss}, {at::full({}, loss_scale, pieces.loss.options())});
        s.optimizer->end_backward();
        loss_sums += stacked_losses(pieces) * loss_scale;
      }
      losses = loss_sums.to(at::kCPU);
    }
    // The reductions share dp and the other groups with the collectives below: done first (the
    // pipeline path launches all of them here, after the schedule's last backward).
    s.optimizer->finish_gradient_sync();
    if (trace_exchanges) write_exchange_trace(s, step);
    if (kernels) {
      kernels->save(fmt::format("{}/traces/step{}/kernels/rank{}.json", config.run.output_dir, step, s.process.rank));
    }

    // Losses: every tp (and pp) rank of a dp rank holds the same values; average over dp. Expert
    // loads: each rank counted the tokens it routed through its layers; the world together routed
    // every token of every layer once (rows of layers a rank does not hold are zero).
    if (dp.size() > 1) dp.all_reduce(losses, ReduceOp::kAvg);
    TANDEM_CHECK_KIND(kRuntime, std::isfinite(losses[0].item<double>()),
                      "step {}: the loss is {}; lower optim.lr or check the data", step, losses[0].item<double>());
    const at::Tensor load = parallel::all_reduce_expert_counts(local_expert_load(s), world);

    const double grad_norm = optimizer_step(s, lr, step);
    update_routing_bias(s, load);
    s.step = step;

    // Evaluation on the held-out split (lm loss only, no MTP/balance terms): eval_steps global
    // batches, split over dp like training batches, so every layout evaluates the same samples.
    std::optional<double> eval_loss;
    const bool eval_due =
        config.train.eval_interval > 0 && (step % config.train.eval_interval == 0 || step == config.train.steps);
    if (eval_due && s.pipeline) {
      s.valid_sampler->reset();
      at::Tensor mean = at::tensor({pipeline_evaluate(s, config.train.eval_steps * s.micro_batches)}, at::kDouble);
      if (dp.size() > 1) dp.all_reduce(mean, ReduceOp::kAvg);
      eval_loss = mean.item<double>();
    } else if (eval_due) {
      s.model->train(false);
      torch::autograd::AutoGradMode no_grad(false);
      const model::AutocastScope autocast(s.device.type(), at::kBFloat16, s.bf16);
      s.valid_sampler->reset();
      at::Tensor sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
      const int64_t eval_micro_batches = config.train.eval_steps * s.micro_batches;
      for (int64_t k = 0; k < eval_micro_batches; ++k) {
        const at::Tensor tokens = next_micro_batch(s, *s.valid_sampler);
        sum += s.model->forward_loss(tokens).lm_loss.detach().to(at::kDouble);
      }
      at::Tensor mean = (sum / static_cast<double>(eval_micro_batches)).to(at::kCPU).reshape({1});
      if (dp.size() > 1) dp.all_reduce(mean, ReduceOp::kAvg);
      eval_loss = mean.item<double>();
      s.model->train(true);
    }

    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double tokens_per_s = static_cast<double>(tokens_per_step) / step_seconds;
    const double mfu = flops_per_token * tokens_per_s / peak_flops;
    const double imbalance = config.model.n_routed_experts > 0 ? load_imbalance(load) : 1.0;
    if (root) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
      const double eta = elapsed / static_cast<double>(step - first_step) * static_cast<double>(config.train.steps - step);
      const double loss = losses[0].item<double>(), lm = losses[1].item<double>(), mtp = losses[2].item<double>();
      if (step % config.logging.log_interval == 0 || step == config.train.steps || step == first_step + 1) {
        TANDEM_LOG_INFO("train",
                        "step {:>5}/{} {} loss {:.4f} (lm {:.4f} mtp {:.4f}) | lr {:.2e} | gnorm {:.3f} | {:.0f} tok/s | "
                        "mfu {:.1f}% | imbalance {:.2f} | {:.2f} s/step | eta {}{}",
                        step, config.train.steps, progress_bar(step, config.train.steps), loss, lm, mtp, lr, grad_norm,
                        tokens_per_s, 100.0 * mfu, imbalance, step_seconds, format_duration(eta),
                        eval_loss ? fmt::format(" | eval {:.4f}", *eval_loss) : std::string());
      }
      std::vector<runtime::MetricField> fields = {
          {"step", step},          {"loss", loss},           {"lm_loss", lm},
          {"mtp_loss", mtp},       {"aux_loss", losses[3].item<double>()},
          {"lr", lr},              {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s},
          {"mfu", mfu},            {"expert_imbalance", imbalance},
          {"step_time_s", step_seconds},
          {"consumed_tokens", step * tokens_per_step}};
      if (eval_loss) fields.emplace_back("eval_loss", *eval_loss);
      s.metrics->write(fields);
      if (s.tensorboard) {
        std::vector<std::pair<std::string, double>> scalars = {
            {"train/loss", loss}, {"train/lm_loss", lm}, {"train/mtp_loss", mtp}, {"train/lr", lr},
            {"train/grad_norm", grad_norm}, {"train/tokens_per_s", tokens_per_s}, {"train/expert_imbalance", imbalance}};
        if (eval_loss) scalars.emplace_back("eval/lm_loss", *eval_loss);
        s.tensorboard->add_scalars(step, scalars);
      }
    }

    // A stop request on any rank stops every rank after this step.
    at::Tensor stop = at::tensor({s.signals.stop_requested() ? 1 : 0}, at::kInt);
    world.all_reduce(stop, ReduceOp::kMax);
    const bool stopping = stop.item<int>() != 0;
    const bool interval_due = config.checkpoint.interval > 0 && step % config.checkpoint.interval == 0;
    const bool last = step == config.train.steps;
    if (interval_due || ((last || stopping) && config.checkpoint.save_on_exit)) save_checkpoint(s);
    if (stopping) {
      if (root) TANDEM_LOG_WARN("train", "stopped by signal after step {}; checkpoint written", step);
      break;
    }
  }
  if (s.tensorboard) s.tensorboard->flush();
  return 0;
}

}  // namespace tandem::launch
