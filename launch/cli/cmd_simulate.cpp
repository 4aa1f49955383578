// `tandem simulate JOB.yaml` and `tandem plan JOB.yaml`: predicted step time, bubble and memory
// of pipeline schedules for a job, from its model (FLOPs, all-to-all bytes) and its hardware
// section. simulate compares every schedule that accepts the job's (pp, micro-batches) side by
// side; plan also varies the micro-batch count (through micro_batch_size) and the interleaved
// virtual stages, drops choices over the per-rank memory budget, and ranks the rest.
// `simulate --measured DIR` instead takes the op timelines `tandem train` wrote for one step
// (logging.trace_steps: DIR = run.output_dir/traces/stepN), re-simulates that schedule with the
// measured per-op times as its cost model, prints both bubble fractions per rank and draws the
// two timelines side by side (Chrome trace and SVG).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>

#include "launch/cli/command.h"
#include "launch/config/config_loader.h"
#include "launch/plan/job_costs.h"
#include "launch/plan/memory_estimate.h"
#include "runtime/device.h"
#include "runtime/file_util.h"
#include "runtime/process_context.h"
#include "schedule/generators.h"
#include "schedule/measured.h"
#include "schedule/planner.h"

namespace tandem::launch {
namespace {

struct SimulateOptions {
  std::string job_path;
  std::vector<std::string> overrides;
  int64_t world = 0;
  int64_t top = 10;
  std::string measured_dir;
  std::string out_prefix;
};

// The timelines of the first data/tensor-parallel replica of the pipeline in `dir` (*.json).
// The step of the first data/tensor-parallel replica's pipeline; `num_files` is the number of
// timelines in the directory, one per rank of the run, i.e. its world size.
schedule::MeasuredStep load_measured_step(const std::string& dir, int64_t& num_files) {
  TANDEM_CHECK_INPUT(runtime::is_directory(dir),
                     "--measured {}: not a directory (expected run.output_dir/traces/stepN)", dir);
  std::vector<schedule::RankTimeline> ranks;
  num_files = 0;
  for (const std::string& name : runtime::list_directory(dir)) {
    if (name.size() < 5 || name.substr(name.size() - 5) != ".json" || name.find("compare") != std::string::npos)
      continue;
    try {
      schedule::RankTimeline t = schedule::rank_timeline_from_json(runtime::read_file(dir + "/" + name));
      ++num_files;
      if (t.dp_rank == 0 && t.tp_rank == 0) ranks.push_back(std::move(t));
    } catch (const Error& e) {
      TANDEM_THROW(kInput, "{}/{}: {}", dir, name, e.message());
    }
  }
  TANDEM_CHECK_INPUT(!ranks.empty(), "--measured {}: no timeline files (rank*.json) of dp rank 0, tp rank 0", dir);
  return schedule::assemble_measured_step(ranks);
}

int simulate_measured(const SimulateOptions& options, const schedule::MeasuredStep& step) {
  const schedule::MeasuredComparison cmp = schedule::compare_measured(step);
  const std::string prefix = options.out_prefix.empty() ? options.measured_dir + "/compare" : options.out_prefix;
  runtime::write_file_atomic(prefix + ".chrome.json", cmp.chrome);
  runtime::write_file_atomic(prefix + ".svg", cmp.svg);
  std::fputs(cmp.table.c_str(), stdout);
  std::printf("# drawn side by side: %s.chrome.json (Perfetto) and %s.svg\n", prefix.c_str(), prefix.c_str());
  return 0;
}

// What the columns mean, for --help (and docs/schedules.md#simulate-and-plan).
constexpr const char* kColumnsHelp = R"help(
Columns:
  schedule     the pipeline schedule (parallel.pipeline.schedule)
  M            micro-batches per step and pipeline (global batch / (mbs * dp))
  v            model chunks (stages) each pipeline rank holds: 2 for DualPipe(V), virtual_stages if interleaved
  mbs          micro-batch size (data.micro_batch_size)
  step (ms)    predicted time of one optimizer step's forward and backward through the pipeline
  bubble       share of the ranks' time spent idle in that step (waiting for a neighbour)
  peak live    most micro-batch chunks whose activations one rank holds at once (activation memory)
  params       parameters per rank, in units of one stage of a plain 1F1B pipeline (DualPipe: 2x)
  memory/rank  estimated peak memory of the most loaded rank (weights, gradients, AdamW, activations);
               "(over budget)" above hardware.gpu_memory_gib
Times use the job's hardware section: a CPU job (run.device: cpu) runs at hardware.cpu_gflops_per_core
per thread, otherwise at hardware.gpu_tflops, both times hardware.mfu_assumed. Schedules that cannot
run this job are listed with the reason.)help";

void add_job_options(CLI::App* command, SimulateOptions& options) {
  command->add_option("job", options.job_path, "Job YAML file")->required();
  command->add_option("--set", options.overrides, "Override a key: --set parallel.pp=8 (repeatable)");
  command
      ->add_option("--world", options.world,
                   "Number of ranks (default: the MPI world size under mpirun, else the job's own: pp * tp * dp, "
                   "dp 1 where derived)")
      ->check(CLI::PositiveNumber);
  command->footer(kColumnsHelp);
}

// Intra-op threads of one rank of a CPU job of `world` ranks on this machine, as `tandem train`
// would give it.
int cpu_threads(int64_t world) { return runtime::threads_per_rank(static_cast<int>(world)); }

struct Candidate {
  schedule::CompareRow row;
  int64_t micro_batch_size = 0;
  double peak_memory_bytes = 0;
};

// Simulates every applicable schedule of `config` as it stands (its micro-batch count), with the
// memory estimate of each. `threads`: intra-op threads per rank of a CPU job.
std::vector<Candidate> evaluate(const JobConfig& config, int virtual_stages, int threads) {
  const JobWork work = job_work(config, threads);
  const auto rows = schedule::compare_schedules(
      static_cast<int>(config.parallel.pp), static_cast<int>(config.parallel.pipeline.micro_batches), virtual_stages,
      schedule::work_cost_factory(work.layers, work.hardware, work.first_extra, work.last_extra));
  const Precision precision = estimated_precision(config);
  std::vector<Candidate> candidates;
  for (const schedule::CompareRow& row : rows) {
    JobConfig variant = config;
    variant.parallel.pipeline.schedule = row.kind;
    variant.parallel.pipeline.virtual_stages = row.kind == schedule::ScheduleKind::kInterleaved ? virtual_stages : 1;
    if (variant.model.num_hidden_layers < row.num_stages) continue;  // not enough layers for its stages
    double peak = 0;
    for (const RankMemory& rank : estimate_memory(variant, precision)) peak = std::max(peak, rank.total_bytes());
    candidates.push_back({row, config.data.micro_batch_size, peak});
  }
  return candidates;
}

std::string render(const std::vector<Candidate>& candidates, double budget_bytes) {
  std::string out = fmt::format("  {:<12} {:>4} {:>4} {:>5} {:>12} {:>9} {:>11} {:>8} {:>14}\n", "schedule", "M", "v",
                                "mbs", "step (ms)", "bubble", "peak live", "params", "memory/rank");
  for (const Candidate& c : candidates) {
    out += fmt::format("  {:<12} {:>4} {:>4} {:>5} {:>12.2f} {:>8.1f}% {:>11} {:>7.1f}x {:>14}{}\n",
                       schedule::schedule_kind_name(c.row.kind), c.row.num_microbatches, c.row.num_chunks,
                       c.micro_batch_size, c.row.makespan, 100.0 * c.row.bubble_fraction, c.row.peak_live_chunks,
                       c.row.param_units, format_bytes(c.peak_memory_bytes),
                       c.peak_memory_bytes > budget_bytes ? "  (over budget)" : "");
  }
  return out;
}

std::string header(const JobConfig& config, int64_t world, int threads) {
  const JobWork work = job_work(config, threads);
  const HardwareConfig& hw = config.hardware;
  const std::string device =
      config.run.device == runtime::DeviceKind::kCpu
          ? fmt::format("CPU job: {} thread(s) per rank x {:.0f} GFLOP/s (hardware.cpu_gflops_per_core)", threads,
                        hw.cpu_gflops_per_core)
          : fmt::format("one GPU per rank at {:.0f} TFLOP/s (hardware.gpu_tflops)", hw.gpu_tflops);
  // GFLOP below a TFLOP: the small jobs of a laptop would print 0.000 TFLOP.
  const bool tera = work.layers.f_tflop >= 1.0;
  const double scale = tera ? 1.0 : 1e3;
  return fmt::format(
      "# {} on {} ranks: pp {} x dp {} x tp {}, ep {}\n# {} x {:.0f}% assumed (hardware.mfu_assumed) = {:.4g} "
      "TFLOP/s per rank; all-to-all {:.0f} GB/s, p2p latency {:.0f} us\n# one micro-batch through all decoder "
      "layers, per tensor-parallel rank: F {:.4g} / B {:.4g} / W {:.4g} {}FLOP, all-to-all {:.1f} MB\n",
      config.run.name, world, config.parallel.pp, config.parallel.dp, config.parallel.tp, config.parallel.ep, device,
      100.0 * hw.mfu_assumed, work.hardware.tflops, work.hardware.a2a_gbps, hw.p2p_latency_us,
      work.layers.f_tflop * scale, work.layers.b_tflop * scale, work.layers.w_tflop * scale, tera ? "T" : "G",
      work.layers.f_a2a_bytes / 1e6);
}

// The schedules absent from `shown`, each with why it cannot run this job (micro-batch count,
// pipeline size, layers) as "# skipped: kind (reason); ...", or "" when none is.
std::string skipped_schedules(const JobConfig& config, const std::vector<Candidate>& shown, int virtual_stages) {
  std::vector<std::string> skipped;
  for (const schedule::ScheduleKind kind : schedule::kAllScheduleKinds) {
    const bool present =
        std::any_of(shown.begin(), shown.end(), [&](const Candidate& c) { return c.row.kind == kind; });
    if (present) continue;
    const int v = kind == schedule::ScheduleKind::kInterleaved ? virtual_stages : 0;
    const int pp = static_cast<int>(config.parallel.pp);
    std::optional<std::string> reason =
        schedule::precondition_violation(kind, pp, static_cast<int>(config.parallel.pipeline.micro_batches), v);
    if (!reason) {  // evaluate() drops a schedule with more stages than layers
      const int stages =
          schedule::generate(kind, pp, static_cast<int>(config.parallel.pipeline.micro_batches), v).num_stages;
      reason = fmt::format("needs {} stages, more than the model's {} layers", stages, config.model.num_hidden_layers);
    }
    skipped.push_back(fmt::format("{} ({})", schedule::schedule_kind_name(kind), *reason));
  }
  return skipped.empty() ? std::string() : fmt::format("# skipped: {}\n", fmt::join(skipped, "; "));
}

}  // namespace

CommandRunner add_simulate_command(CLI::App& app) {
  auto options = std::make_shared<SimulateOptions>();
  CLI::App* command =
      app.add_subcommand("simulate", "Predict step time, bubble and memory of every applicable schedule for a job");
  add_job_options(command, *options);
  command->add_option("--measured", options->measured_dir,
                      "Compare with a measured step: the directory of op timelines `tandem train` wrote for it "
                      "(run.output_dir/traces/stepN, from logging.trace_steps); the world defaults to the run's");
  command->add_option("--out", options->out_prefix,
                      "With --measured: write PREFIX.chrome.json and PREFIX.svg (default DIR/compare)");
  return [options](const CommandEnv& env) {
    // Read before the set-up gate, so bad timeline files exit 2 on every rank.
    std::optional<schedule::MeasuredStep> measured;
    int64_t measured_world = 0;
    if (!options->measured_dir.empty()) measured = load_measured_step(options->measured_dir, measured_world);
    const int64_t world = measured && options->world == 0
                              ? measured_world
                              : described_job_world(options->world, env, options->job_path, options->overrides);
    const JobConfig config = load_job_config(options->job_path, options->overrides, world);
    if (measured) {
      const schedule::Schedule& ran = measured->schedule;
      TANDEM_CHECK_INPUT(config.parallel.pipeline.schedule == ran.kind && config.parallel.pp == ran.num_ranks &&
                             config.parallel.pipeline.micro_batches == ran.num_microbatches,
                         "--measured {}: the traces are of {} over pp {} with {} micro-batches, but the job says {} "
                         "over pp {} with {}; give the job file (and --set overrides) of the traced run",
                         options->measured_dir, schedule::schedule_kind_name(ran.kind), ran.num_ranks,
                         ran.num_microbatches, config::enum_name(config.parallel.pipeline.schedule), config.parallel.pp,
                         config.parallel.pipeline.micro_batches);
    }
    env.setup.pass();
    if (!env.process.is_root()) return 0;
    if (measured) return simulate_measured(*options, *measured);
    const int v = static_cast<int>(std::max<int64_t>(config.parallel.pipeline.virtual_stages, 2));
    const double budget = config.hardware.gpu_memory_gib * 1024.0 * 1024.0 * 1024.0;
    const int threads = cpu_threads(world);
    const std::vector<Candidate> candidates = evaluate(config, v, threads);
    const std::string out = header(config, world, threads) + render(candidates, budget) +
                            skipped_schedules(config, candidates, v);
    std::fputs(out.c_str(), stdout);
    return 0;
  };
}

CommandRunner add_plan_command(CLI::App& app) {
  auto options = std::make_shared<SimulateOptions>();
  CLI::App* command = app.add_subcommand(
      "plan", "Rank (schedule, micro-batches, virtual stages) choices by predicted step time within the memory budget");
  add_job_options(command, *options);
  command->add_option("--top", options->top, "How many choices to print")->check(CLI::PositiveNumber);
  return [options](const CommandEnv& env) {
    const int64_t world = described_job_world(options->world, env, options->job_path, options->overrides);
    const JobConfig config = load_job_config(options->job_path, options->overrides, world);
    env.setup.pass();
    if (!env.process.is_root()) return 0;
    const int threads = cpu_threads(world);
    // The global batch is fixed; the micro-batch count moves with micro_batch_size.
    const int64_t sequences_per_dp_rank = config.data.global_batch_size / config.parallel.dp;
    std::vector<Candidate> all;
    for (int64_t mbs = 1; mbs <= sequences_per_dp_rank; ++mbs) {
      if (sequences_per_dp_rank % mbs != 0) continue;
      JobConfig variant = config;
      variant.data.micro_batch_size = mbs;
      variant.parallel.pipeline.micro_batches = sequences_per_dp_rank / mbs;
      for (int v : {2, 3, 4}) {
        for (Candidate& candidate : evaluate(variant, v, threads)) {
          const bool interleaved = candidate.row.kind == schedule::ScheduleKind::kInterleaved;
          if (interleaved || v == 2) all.push_back(candidate);  // other kinds do not depend on v
        }
      }
    }
    const double budget = config.hardware.gpu_memory_gib * 1024.0 * 1024.0 * 1024.0;
    std::vector<Candidate> fitting;
    for (const Candidate& c : all) {
      if (c.peak_memory_bytes <= budget) fitting.push_back(c);
    }
    std::sort(fitting.begin(), fitting.end(),
              [](const Candidate& a, const Candidate& b) { return a.row.makespan < b.row.makespan; });
    if (static_cast<int64_t>(fitting.size()) > options->top) fitting.resize(static_cast<size_t>(options->top));
    std::string out = header(config, world, threads);
    out += fmt::format("# {} choices simulated, {} fit in {:.0f} GiB per rank; fastest first\n", all.size(),
                       all.size() - std::count_if(all.begin(), all.end(),
                                                  [&](const Candidate& c) { return c.peak_memory_bytes > budget; }),
                       config.hardware.gpu_memory_gib);
    out += render(fitting, budget);
    out += skipped_schedules(config, all, 2);
    std::fputs(out.c_str(), stdout);
    return 0;
  };
}

}  // namespace tandem::launch
