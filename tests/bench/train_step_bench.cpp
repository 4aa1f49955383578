// Single-device training-step benchmark of tandem's own path: the job's model (model::Model),
// fp32 master weights with AdamW through parallel::DataParallelOptimizer (as `tandem train`, here
// over groups of size 1), bf16 autocast on the GPU, global-norm clipping and the routing-bias
// update, on one fixed random token batch that lives on the device (data loading is not
// measured; tests/bench/reference_model.py does the same). Prints one JSON line: tokens/s, step
// time, MFU (ModelSize's training FLOPs over hardware.gpu_tflops), peak allocated device memory,
// and the final loss.
// `--model-json PATH` also writes what the PyTorch reference needs to build the same model and
// step (architecture, batch, precision, optimizer), so both sides read one resolved config.
// Host synchronisation per step: the gradient norm (clipping needs it on the host, as in the
// trainer); nothing per layer. Usage: see kUsage.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "launch/config/config_loader.h"
#include "launch/plan/memory_estimate.h"
#include "launch/train/graphed_step.h"
#include "launch/train/training_device.h"
#include "model/autocast.h"
#include "model/init.h"
#include "model/model.h"
#include "model/model_size.h"
#include "parallel/adamw.h"
#include "parallel/data_parallel_optimizer.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/json.h"

#ifdef TANDEM_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace tandem::bench {
namespace {

constexpr const char* kUsage =
    "usage: tandem_train_bench JOB.yaml [--steps N] [--warmup N] [--set key=value]... [--label NAME]\n"
    "                          [--model-json PATH] [--describe] [--profile TRACE.json] [--print-load]\n"
    "Runs N timed optimizer steps (after warm-up) of the job's model with micro_batch_size x seq_length\n"
    "tokens per step on run.device and prints one JSON line of throughput, MFU and peak memory.\n"
    "--describe: only resolve the job, write --model-json and print the parameter and FLOP counts.\n"
    "--profile: after the timed steps, record one more step with the Kineto profiler (host ops and\n"
    "device kernels) and write it as a Chrome trace (tests/bench/profile_summary.py reads it).\n"
    "--print-load: add the last step's tokens per expert (\"expert_load\", one row per MoE layer) to the\n"
    "line; with --steps 1 --warmup 0 that is the routing of the initial weights (compare devices).\n";

struct Options {
  std::string config_path;
  std::vector<std::string> overrides;
  int64_t steps = 10;
  int64_t warmup = 3;
  std::string label;
  std::string model_json;
  bool describe = false;
  bool print_load = false;
  std::string profile_path;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      TANDEM_CHECK_KIND(kInput, i + 1 < argc, "{} needs a value\n{}", arg, kUsage);
      return argv[++i];
    };
    if (arg == "--steps") {
      o.steps = std::stoll(value());
    } else if (arg == "--warmup") {
      o.warmup = std::stoll(value());
    } else if (arg == "--set") {
      o.overrides.push_back(value());
    } else if (arg == "--label") {
      o.label = value();
    } else if (arg == "--model-json") {
      o.model_json = value();
    } else if (arg == "--profile") {
      o.profile_path = value();
    } else if (arg == "--describe") {
      o.describe = true;
    } else if (arg == "--print-load") {
      o.print_load = true;
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      TANDEM_CHECK_KIND(kInput, o.config_path.empty() && arg.rfind("--", 0) != 0, "unexpected argument '{}'\n{}", arg,
                        kUsage);
      o.config_path = arg;
    }
  }
  TANDEM_CHECK_KIND(kInput, !o.config_path.empty(), "no job file given\n{}", kUsage);
  TANDEM_CHECK_KIND(kInput, o.steps >= 1 && o.warmup >= 0, "--steps must be >= 1 and --warmup >= 0");
  return o;
}

void synchronize(const at::Device& device) {
#ifdef TANDEM_HAVE_CUDA
  if (device.is_cuda()) at::cuda::getCurrentCUDAStream(device.index()).synchronize();
#else
  static_cast<void>(device);
#endif
}

std::string device_name(const at::Device& device) {
#ifdef TANDEM_HAVE_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  return "cpu";
}

// Peak bytes allocated through LibTorch's caching allocator since the start (CUDA); 0 on CPU.
double peak_memory_gib(const at::Device& device) {
#ifdef TANDEM_HAVE_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return static_cast<double>(stats.allocated_bytes[aggregate].peak) / (1024.0 * 1024.0 * 1024.0);
  }
#else
  static_cast<void>(device);
#endif
  return 0.0;
}

// MFU's denominator on a CPU run (smoke tests): the configured per-core peak times the threads.
double cpu_peak_flops(const launch::JobConfig& job) {
  return job.hardware.cpu_gflops_per_core * 1e9 * at::get_num_threads();
}

// Records one call of `step` with Kineto (host ops, and device kernels on a GPU) and saves it as
// a Chrome trace: where a step's time goes, kernel by kernel, for the performance work.
template <typename Step>
void profile_one_step(Step& step, const at::Device& device, const std::string& path) {
  namespace profiler = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  std::set<ActivityType> activities{ActivityType::CPU};
  if (device.is_cuda()) activities.insert(ActivityType::CUDA);
  profiler::prepareProfiler(config, activities);
  profiler::enableProfiler(config, activities);
  step();
  synchronize(device);
  const std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
  result->save(path);
}

// The resolved model, batch and optimizer as JSON for tests/bench/reference_model.py.
void write_model_json(const std::string& path, const launch::JobConfig& job, bool bf16, double flops_per_token,
                      const model::ModelSize& size) {
  const model::ModelConfig& m = job.model;
  nlohmann::ordered_json o;
  o["attention_type"] = config::enum_name(m.attention_type);
  o["vocab_size"] = m.vocab_size;
  o["hidden_size"] = m.hidden_size;
  o["num_hidden_layers"] = m.num_hidden_layers;
  o["intermediate_size"] = m.intermediate_size;
  o["moe_intermediate_size"] = m.moe_intermediate_size;
  o["num_attention_heads"] = m.num_attention_heads;
  o["num_key_value_heads"] = m.num_key_value_heads;
  o["head_dim"] = m.gqa_head_dim();
  // MLA (attention_type "mla"); q_lora_rank null means a direct q_proj.
  o["q_lora_rank"] = m.q_lora_rank ? nlohmann::ordered_json(*m.q_lora_rank) : nlohmann::ordered_json(nullptr);
  o["kv_lora_rank"] = m.kv_lora_rank;
  o["qk_nope_head_dim"] = m.qk_nope_head_dim;
  o["qk_rope_head_dim"] = m.qk_rope_head_dim;
  o["v_head_dim"] = m.v_head_dim;
  o["max_position_embeddings"] = m.max_position_embeddings;
  o["n_routed_experts"] = m.n_routed_experts;
  o["n_shared_experts"] = m.n_shared_experts;
  o["num_experts_per_tok"] = m.num_experts_per_tok;
  o["n_group"] = m.n_group;
  o["topk_group"] = m.topk_group;
  o["routed_scaling_factor"] = json::number(m.routed_scaling_factor);
  o["norm_topk_prob"] = m.norm_topk_prob;
  o["scoring_func"] = config::enum_name(m.scoring_func);
  o["first_k_dense_replace"] = m.first_k_dense_replace;
  o["rms_norm_eps"] = json::number(m.rms_norm_eps);
  o["rope_theta"] = json::number(m.rope_theta);
  o["tie_word_embeddings"] = m.tie_word_embeddings;
  o["num_nextn_predict_layers"] = m.num_nextn_predict_layers;
  o["mtp_loss_weight"] = json::number(m.mtp_loss_weight);
  o["aux_loss_alpha"] = json::number(m.aux_loss_alpha);
  o["bias_update_speed"] = json::number(m.bias_update_speed);
  o["force_balanced_routing"] = m.force_balanced_routing;
  o["initializer_range"] = json::number(m.initializer_range);
  o["rope_scaling"] = config::enum_name(m.rope_scaling.type);
  o["rope_factor"] = json::number(m.rope_scaling.factor);
  o["rope_original_max_position_embeddings"] = m.rope_scaling.original_max_position_embeddings;
  o["rope_beta_fast"] = json::number(m.rope_scaling.beta_fast);
  o["rope_beta_slow"] = json::number(m.rope_scaling.beta_slow);
  o["rope_mscale"] = json::number(m.rope_scaling.mscale);
  o["rope_mscale_all_dim"] = json::number(m.rope_scaling.mscale_all_dim);
  o["micro_batch_size"] = job.data.micro_batch_size;
  o["seq_length"] = job.data.seq_length;
  o["bf16"] = bf16;
  o["lr"] = json::number(job.optim.lr);
  o["beta1"] = json::number(job.optim.beta1);
  o["beta2"] = json::number(job.optim.beta2);
  o["eps"] = json::number(job.optim.eps);
  o["weight_decay"] = json::number(job.optim.weight_decay);
  o["grad_clip"] = json::number(job.optim.grad_clip);
  o["seed"] = job.run.seed;
  o["flops_per_token"] = json::number(flops_per_token);
  o["peak_flops"] = json::number(job.hardware.gpu_tflops * 1e12);
  o["cpu_peak_flops"] = json::number(cpu_peak_flops(job));
  o["total_params"] = size.model_params();
  std::ofstream out(path);
  TANDEM_CHECK_KIND(kIo, out.good(), "cannot write {}", path);
  out << json::dump_line(o) << "\n";
}

// One JSON line on stdout (what run_gpu_bench.sh and bench_table.py read).
void print_json_line(const nlohmann::ordered_json& line) {
  std::printf("%s\n", json::dump_line(line).c_str());
  std::fflush(stdout);
}

// One step of tandem's own training path on one fixed device batch, as the trainer runs it:
// the model built on the CPU (init is a pure function of seed and name) and moved, AdamW through
// DataParallelOptimizer, autocast as the job says, clipping and the routing-bias update.
class BenchStep {
 public:
  BenchStep(const launch::JobConfig& job, const launch::TrainingDevice& on)
      : job_(job), on_(on), model_(job.model, static_cast<uint64_t>(job.run.seed)) {
    model_.whole().set_recompute(job.train.recompute_policy());
    model_.to(on.device);
    model_.train(true);
    parallel::DataParallelOptions options;
    options.adamw = parallel::AdamWConfig{job.optim.beta1, job.optim.beta2, job.optim.eps, job.optim.weight_decay};
    options.decays = model::takes_weight_decay;
    optimizer_ = std::make_unique<parallel::DataParallelOptimizer>(model_.sharded_parameters(),
                                                                   parallel::DataParallelGroups{}, options);
    // One fixed batch of random tokens on the device: [B, T+1] (inputs and shifted labels).
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(job.run.seed));
    tokens_ = at::randint(0, job.model.vocab_size, {job.data.micro_batch_size, job.data.seq_length + 1}, gen,
                          at::TensorOptions().dtype(at::kLong))
                  .to(on.device);
  }

  void operator()() {
    optimizer_->zero_grad();
    if (job_.train.cuda_graph) {
      // As the trainer's flat runner: the recorded forward and backward, reductions after it.
      if (!graphed_) {
        graphed_ = std::make_unique<launch::GraphedMicroStep>(
            [this](const at::Tensor& tokens) { return forward_backward(tokens); }, /*eager_runs=*/2);
      }
      optimizer_->begin_backward(/*final_backward=*/false);
      last_loss_ = graphed_->run(tokens_);
    } else {
      optimizer_->begin_backward(/*final_backward=*/true);
      last_loss_ = forward_backward(tokens_);
    }
    optimizer_->end_backward();
    optimizer_->finish_gradient_sync();
    const double grad_norm = optimizer_->global_grad_norm();  // the step's one host sync
    optimizer_->step(job_.optim.lr, parallel::clip_scale(grad_norm, job_.optim.grad_clip));
    if (job_.model.n_routed_experts > 0) {
      const at::Tensor load = model_.expert_load();
      imbalance_ = model::load_imbalance(load);
      last_load_ = load;
      model_.update_routing_bias(load);
      model_.reset_expert_load();
    }
  }

  double last_loss() const { return last_loss_.item<double>(); }
  double last_imbalance() const { return imbalance_; }  // model::load_imbalance of the last step
  // Tokens per expert of the last step, one row per MoE layer (main layers, then MTP blocks).
  std::vector<std::vector<int64_t>> last_load() const {
    std::vector<std::vector<int64_t>> rows;
    for (int64_t layer = 0; last_load_.defined() && layer < last_load_.size(0); ++layer) {
      const at::Tensor row = last_load_[layer].contiguous();
      if (row.sum().item<int64_t>() == 0) continue;  // a dense layer
      rows.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
    }
    return rows;
  }

 private:
  // Forward under the job's autocast and backward of the batch; returns the LM loss.
  at::Tensor forward_backward(const at::Tensor& tokens) {
    model::LossPieces pieces;
    {
      const model::AutocastScope autocast(on_.device.type(), at::kBFloat16, on_.bf16());
      pieces = model_.forward_loss(tokens, 1.0);
    }
    torch::autograd::backward({pieces.loss}, {at::ones({}, pieces.loss.options())});
    return pieces.lm_loss.detach();
  }

  const launch::JobConfig& job_;
  launch::TrainingDevice on_;
  model::Model model_;
  std::unique_ptr<parallel::DataParallelOptimizer> optimizer_;
  at::Tensor tokens_;
  std::unique_ptr<launch::GraphedMicroStep> graphed_;  // with train.cuda_graph
  at::Tensor last_loss_;
  double imbalance_ = 1.0;
  at::Tensor last_load_;
};

int run(const Options& options) {
  const launch::JobConfig job = launch::load_job_config(options.config_path, options.overrides, 1);
  // --describe touches no device: it reports on the device the job is meant for (as check-config).
  const launch::TrainingDevice trained_on =
      options.describe ? launch::TrainingDevice{job.run.device == runtime::DeviceKind::kCpu ? at::kCPU : at::kCUDA,
                                                launch::estimated_precision(job)}
                       : launch::resolve_training_device(job, /*local_rank=*/0, "this host");
  const at::Device device = trained_on.device;
  const model::ModelSize size = model::compute_model_size(job.model);
  const int64_t tokens_per_step = job.data.micro_batch_size * job.data.seq_length;
  const double flops_per_token = size.train_flops_per_token(job.data.seq_length);
  if (!options.model_json.empty()) write_model_json(options.model_json, job, trained_on.bf16(), flops_per_token, size);
  if (options.describe) {
    nlohmann::ordered_json line;
    line["label"] = options.label;
    line["params"] = size.model_params();
    line["activated_params"] = size.activated_params;
    line["flops_per_token"] = json::number(flops_per_token);
    print_json_line(line);
    return 0;
  }

  BenchStep step(job, trained_on);
  for (int64_t i = 0; i < options.warmup; ++i) step();
  synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.steps; ++i) step();
  synchronize(device);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Profiled after timing so the profiler's own overhead never enters the figures.
  if (!options.profile_path.empty()) profile_one_step(step, device, options.profile_path);

  const double tokens_per_s = static_cast<double>(options.steps * tokens_per_step) / seconds;
  const double peak_flops = device.is_cuda() ? job.hardware.gpu_tflops * 1e12 : cpu_peak_flops(job);
  nlohmann::ordered_json line;
  line["impl"] = "tandem";
  line["label"] = options.label;
  line["device"] = device_name(device);
  line["precision"] = trained_on.bf16() ? "bf16" : "fp32";
  line["params"] = size.model_params();
  line["tokens_per_step"] = tokens_per_step;
  line["steps"] = options.steps;
  line["step_ms"] = json::rounded(1e3 * seconds / static_cast<double>(options.steps), 3);
  line["tokens_per_s"] = json::rounded(tokens_per_s, 1);
  line["mfu"] = json::rounded(flops_per_token * tokens_per_s / peak_flops, 5);
  line["peak_mem_gib"] = json::rounded(peak_memory_gib(device), 3);
  line["final_loss"] = json::rounded(step.last_loss(), 5);
  line["imbalance"] = json::rounded(step.last_imbalance(), 3);
  if (options.print_load) line["expert_load"] = step.last_load();
  line["recompute"] = config::enum_name(job.train.recompute);
  line["cuda_graph"] = job.train.cuda_graph;
  // What check-config predicts for this job (launch/plan/memory_estimate.h), beside the peak.
  line["estimated_mem_gib"] =
      json::rounded(launch::estimate_memory(job, trained_on.precision).front().total_bytes() / 1073741824.0, 3);
  print_json_line(line);
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  try {
    return tandem::bench::run(tandem::bench::parse(argc, argv));
  } catch (const tandem::Error& error) {
    std::fprintf(stderr, "tandem_train_bench: %s\n", error.what());
    return tandem::exit_code_for(error.kind());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "tandem_train_bench: %s\n", error.what());
    return 1;
  }
}
