// `tandem check-config JOB.yaml [--world N] [--set key=value ...]`: loads and validates a job
// exactly as `train` would, then prints the resolved config, the rank layout, the parameter
// count and a per-rank memory estimate. Under mpirun the world is the MPI world, outside it the
// job's own (pp * tp * dp); --world sizes a layout for a cluster you are not on (e.g.
// DeepSeek-V3 on 2048 GPUs).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "launch/cli/command.h"
#include "launch/config/config_loader.h"
#include "launch/plan/memory_estimate.h"
#include "model/model_size.h"
#include "parallel/grid_layout.h"
#include "runtime/process_context.h"

namespace tandem::launch {
namespace {

struct CheckConfigOptions {
  std::string job_path;
  std::vector<std::string> overrides;
  int64_t world = 0;
  bool quiet = false;
};

std::string human_count(int64_t count) {
  const double value = static_cast<double>(count);
  if (value >= 1e9) return fmt::format("{:.2f}B", value / 1e9);
  if (value >= 1e6) return fmt::format("{:.2f}M", value / 1e6);
  if (value >= 1e3) return fmt::format("{:.1f}K", value / 1e3);
  return fmt::format("{}", count);
}

void print_report(const JobConfig& config, int64_t world, bool quiet) {
  std::string out;
  if (!quiet) out += "# resolved config\n" + job_config_to_yaml(config) + "\n";
  const auto layout = parallel::GridLayout::create(world, config.parallel.pp, config.parallel.dp, config.parallel.tp,
                                                   config.parallel.ep, config.parallel.order);
  out += "# layout\n";
  if (world <= 64) {
    out += layout.describe();
  } else {
    out += fmt::format("{} ranks = pp {} x dp {} x tp {} (order {}), ep {} over dp*tp, expert-dp {} (rank map "
                       "omitted above 64 ranks)\n",
                       world, layout.pp_size(), layout.dp_size(), layout.tp_size(), layout.order(), layout.ep_size(),
                       layout.edp_size());
  }
  const model::ModelSize size = model::compute_model_size(config.model);
  out += "\n# parameters\n";
  out += fmt::format("  total (main model)     {:>12}  ({})\n", human_count(size.total_params), size.total_params);
  out +=
      fmt::format("  activated per token    {:>12}  ({})\n", human_count(size.activated_params), size.activated_params);
  out += fmt::format("  MTP modules            {:>12}  ({})\n", human_count(size.mtp_params), size.mtp_params);
  out += fmt::format("  training FLOPs/token   {:>12.4g}  (seq {})\n",
                     size.train_flops_per_token(config.data.seq_length), config.data.seq_length);
  const Precision precision = estimated_precision(config);
  const std::string recompute =
      config.train.recompute == model::RecomputeMode::kNone
          ? ""
          : fmt::format(", recompute {}{}", config::enum_name(config.train.recompute),
                        config.train.recompute_layers > 0
                            ? fmt::format(" ({} layers per stage)", config.train.recompute_layers)
                            : "");
  out += fmt::format("\n# memory per rank (estimate, {}, zero {}{}, {} with {} micro-batches)\n",
                     precision == Precision::kBf16 ? "bf16 + fp32 master" : "fp32", config.parallel.zero, recompute,
                     config::enum_name(config.parallel.pipeline.schedule), config.parallel.pipeline.micro_batches);
  out += "  pp rank      params     weights       grads   optimizer  activations (live)       total\n";
  for (const RankMemory& rank : estimate_memory(config, precision)) {
    out += fmt::format("  {:>7} {:>11} {:>11} {:>11} {:>11} {:>12} ({:>3}) {:>11}\n", rank.pp_rank,
                       human_count(rank.params), format_bytes(rank.weight_bytes), format_bytes(rank.grad_bytes),
                       format_bytes(rank.optimizer_bytes), format_bytes(rank.activation_bytes), rank.live_microbatches,
                       format_bytes(rank.total_bytes()));
  }
  // The same job under each ZeRO stage (pipeline rank holding the most), without activations.
  out += fmt::format("\n# weights + gradients + optimizer per rank by ZeRO stage (dp {}, expert-dp {})\n",
                     layout.dp_size(), layout.edp_size());
  out += "  zero     weights       grads   optimizer       total\n";
  for (int64_t zero = 0; zero <= 3; ++zero) {
    RankMemory most;
    for (const RankMemory& rank : estimate_memory(config, precision, zero)) {
      if (rank.weight_bytes + rank.grad_bytes + rank.optimizer_bytes >
          most.weight_bytes + most.grad_bytes + most.optimizer_bytes) {
        most = rank;
      }
    }
    out += fmt::format("  {:>4} {:>11} {:>11} {:>11} {:>11}{}\n", zero, format_bytes(most.weight_bytes),
                       format_bytes(most.grad_bytes), format_bytes(most.optimizer_bytes),
                       format_bytes(most.weight_bytes + most.grad_bytes + most.optimizer_bytes),
                       zero == config.parallel.zero ? "  <- parallel.zero" : "");
  }
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace

int64_t described_job_world(int64_t given, const CommandEnv& env, const std::string& job_path,
                            const std::vector<std::string>& overrides) {
  if (given > 0) return given;
  if (env.process.world_size > 1) return env.process.world_size;
  return job_file_world(job_path, overrides);
}

CommandRunner add_check_config_command(CLI::App& app) {
  auto options = std::make_shared<CheckConfigOptions>();
  CLI::App* command = app.add_subcommand("check-config", "Validate a job file and print its layout, size and memory");
  command->add_option("job", options->job_path, "Job YAML file")->required();
  command->add_option("--set", options->overrides, "Override a key: --set parallel.pp=2 (repeatable)");
  command
      ->add_option("--world", options->world,
                   "Number of ranks to lay out (default: the MPI world size under mpirun, else the job's own: "
                   "pp * tp * dp, dp 1 where derived)")
      ->check(CLI::PositiveNumber);
  command->add_flag("--quiet", options->quiet, "Omit the resolved config from the printout");
  return [options](const CommandEnv& env) {
    const int64_t world = described_job_world(options->world, env, options->job_path, options->overrides);
    const JobConfig config = load_job_config(options->job_path, options->overrides, world);
    env.setup.pass();
    if (env.process.is_root()) print_report(config, world, options->quiet);
    return 0;
  };
}

CommandRunner add_config_reference_command(CLI::App& app) {
  CLI::App* command = app.add_subcommand("config-reference", "Print the reference of every job-file key (Markdown)");
  return [](const CommandEnv& env) {
    if (env.process.is_root()) std::fputs(job_config_reference_markdown().c_str(), stdout);
    return 0;
  };
  (void)command;
}

}  // namespace tandem::launch
