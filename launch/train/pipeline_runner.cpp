// PipelineRunner (pipeline_runner.h).
#include "launch/train/pipeline_runner.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "launch/train/step_tracing.h"
#include "model/stage.h"
#include "parallel/process_grid.h"
#include "runtime/error.h"
#include "runtime/file_util.h"
#include "runtime/log.h"
#include "schedule/executor/executor.h"
#include "schedule/generators.h"
#include "schedule/measured.h"

namespace tandem::launch {
namespace {

using parallel::GroupKind;

// A tag no pipeline message of a step uses (those stay below 2 * M * S + S * S).
constexpr int kTraceTag = 30000;

schedule::Schedule job_schedule(const JobConfig& config) {
  return schedule::generate(config.parallel.pipeline.schedule, static_cast<int>(config.parallel.pp),
                            static_cast<int>(config.parallel.pipeline.micro_batches),
                            pipeline_chunks(config.parallel.pipeline));
}

}  // namespace

void check_pipeline_supported(const JobConfig& config) {
  if (!uses_pipeline(config)) return;
  const auto& p = config.parallel;
  TANDEM_CHECK_CONFIG(p.zero <= 1,
                      "parallel.zero = {} with a pipeline (pp = {}, {}): the pipeline path of `tandem train` keeps "
                      "each stage's gradients whole until the step's last backward and shards optimizer state only "
                      "(zero 1); use --set parallel.zero=1 or 0",
                      p.zero, p.pp, config::enum_name(p.pipeline.schedule));
}

PipelineRunner::PipelineRunner(const JobConfig& config, const parallel::ProcessGrid& grid,
                               const model::ParallelGroups& groups, const TrainingDevice& device,
                               std::shared_ptr<const model::Objective> objective)
    : config_(config), grid_(grid) {
  check_pipeline_supported(config);
  schedule::Schedule plan = job_schedule(config);
  const int pp_rank = static_cast<int>(grid.coord().pp);
  // The executor matches pipeline messages by tag and posts receives ahead of their ops; NCCL
  // matches point-to-point messages in issue order on one stream, where that would deadlock.
  TANDEM_CHECK_CONFIG(grid.pp().size() == 1 || grid.pp().backend().rfind("nccl", 0) != 0,
                      "parallel.backend: the pipeline executor needs a tag-matching backend for its point-to-point "
                      "messages (MPI, host-staged on GPUs); the pipeline group here uses {}. Set "
                      "parallel.backend=mpi",
                      grid.pp().backend());
  const std::vector<model::StageSpec> specs = model::partition_layers(config.model, plan.num_stages);
  for (int c = 0; c < plan.num_chunks; ++c) {
    chunks_.push_back(model::Stage::build(config.model, static_cast<uint64_t>(config.run.seed), groups,
                                          specs[static_cast<size_t>(plan.placement.stage_of(pp_rank, c))]));
    chunks_.back()->set_objective(objective);
    chunks_.back()->set_recompute(config.train.recompute_policy());
    chunks_.back()->to(device.device);
    chunks_.back()->train(true);
  }
  schedule::ExecutorOptions options;
  options.loss_scale = 1.0 / static_cast<double>(config.parallel.pipeline.micro_batches);
  options.device = device.device;
  options.autocast_bf16 = device.bf16();
  executor_ = std::make_unique<schedule::PipelineExecutor>(std::move(plan), pp_rank, chunks_,
                                                           grid.shared(GroupKind::kPipeline), options);
}

PipelineRunner::~PipelineRunner() = default;

std::vector<parallel::ShardedParam> PipelineRunner::sharded_parameters() const {
  std::vector<parallel::ShardedParam> out;
  for (const auto& chunk : chunks_) {
    std::vector<parallel::ShardedParam> params = chunk->sharded_parameters();
    out.insert(out.end(), params.begin(), params.end());
  }
  return out;
}

std::vector<bool> PipelineRunner::counted_parameters() const {
  std::vector<bool> out;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    for (const auto& [name, param] : chunks_[c]->named_parameters()) {
      out.push_back(executor_->is_primary(static_cast<int>(c), name));
    }
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> PipelineRunner::named_buffers(bool stored_only) const {
  const schedule::Placement& placement = executor_->schedule().placement;
  const parallel::GridCoord& coord = grid_.coord();
  const int pp_rank = static_cast<int>(coord.pp);
  // The primary holder of `stage` (ReplicaGradSync::is_primary's order: lowest chunk, then rank).
  auto first_holder = [&](int stage) {
    for (int c = 0; c < placement.num_chunks(); ++c) {
      for (int r = 0; r < placement.num_ranks(); ++r) {
        if (placement.stage_of(r, c) == stage) return r;
      }
    }
    return -1;
  };
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (stored_only && (coord.dp != 0 || coord.tp != 0)) return out;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    if (stored_only && first_holder(placement.stage_of(pp_rank, static_cast<int>(c))) != pp_rank) continue;
    for (auto& buffer : chunks_[c]->named_buffers()) out.push_back(std::move(buffer));
  }
  return out;
}

void PipelineRunner::attach(parallel::DataParallelOptimizer& /*optimizer*/) {
  // The data-parallel reduction starts after the schedule's last backward (finish_gradient_sync);
  // nothing hooks into the stages, which is why the constructor refuses ZeRO 2/3
  // (check_pipeline_supported).
}

StepLosses PipelineRunner::forward_backward(const std::vector<at::Tensor>& micro_batches, int64_t step) {
  const schedule::StepReport report = executor_->run_step(micro_batches);
  // LM and MTP losses live where each micro-batch's last stage ran, balance losses in every stage.
  double lm = 0, mtp = 0, aux = 0;
  for (const schedule::MicroBatchLosses& l : report.losses) {
    if (l.has_head) lm += l.lm_loss, mtp += l.mtp_loss;
    aux += l.aux_loss;
  }
  const double scale = 1.0 / static_cast<double>(micro_batches.size());
  at::Tensor sums = at::tensor({lm * scale, mtp * scale, aux * scale}, at::kDouble);
  grid_.pp().all_reduce(sums);
  StepLosses out;
  out.lm_loss = sums[0].item<double>();
  out.mtp_loss = sums[1].item<double>();
  out.aux_loss = sums[2].item<double>();
  // The executor reports the pieces, not the objective's total: this is the total of the
  // next-token objective (model/objective.h), the only one pipelines train with so far.
  out.loss = out.lm_loss + out.mtp_loss + out.aux_loss;

  if (is_traced_step(config_, step)) {
    std::vector<double> times;
    for (const schedule::OpTime& t : report.op_times) times.insert(times.end(), {t.start, t.end});
    write_trace(step, times);
  }
  return out;
}

void PipelineRunner::write_trace(int64_t step, const std::vector<double>& op_times_ms) {
  const schedule::Schedule& plan = executor_->schedule();
  const parallel::GridCoord& coord = grid_.coord();
  const std::string dir = fmt::format("{}/traces/step{}", config_.run.output_dir, step);
  runtime::make_directories(dir);
  auto timeline_of = [&](int pp_rank, const std::vector<double>& times) {
    schedule::RankTimeline t{plan.kind,
                             plan.num_ranks,
                             plan.num_microbatches,
                             plan.num_chunks,
                             step,
                             pp_rank,
                             static_cast<int>(coord.dp),
                             static_cast<int>(coord.tp),
                             plan.ranks[static_cast<size_t>(pp_rank)],
                             {}};
    for (size_t i = 0; i + 1 < times.size(); i += 2) t.times.push_back({times[i], times[i + 1]});
    return t;
  };
  const int pp_rank = static_cast<int>(coord.pp);
  runtime::write_file_atomic(fmt::format("{}/rank{}.json", dir, grid_.rank()),
                             schedule::rank_timeline_to_json(timeline_of(pp_rank, op_times_ms)));

  // The first data/tensor-parallel replica's pipeline is drawn by its pp rank 0 (global rank 0).
  if (coord.dp != 0 || coord.tp != 0) return;
  parallel::Communicator& pp = grid_.pp();
  if (pp_rank != 0) {
    pp.send(at::tensor(op_times_ms, at::kDouble), 0, kTraceTag);
    return;
  }
  std::vector<schedule::RankTimeline> ranks{timeline_of(0, op_times_ms)};
  for (int r = 1; r < plan.num_ranks; ++r) {
    at::Tensor times = at::empty({static_cast<int64_t>(2 * plan.ranks[static_cast<size_t>(r)].size())}, at::kDouble);
    pp.recv(times, r, kTraceTag);
    ranks.push_back(
        timeline_of(r, std::vector<double>(times.data_ptr<double>(), times.data_ptr<double>() + times.numel())));
  }
  const schedule::MeasuredComparison cmp = schedule::compare_measured(schedule::assemble_measured_step(ranks));
  runtime::write_file_atomic(dir + "/compare.chrome.json", cmp.chrome);
  runtime::write_file_atomic(dir + "/compare.svg", cmp.svg);
  TANDEM_LOG_INFO("trace",
                  "step {}: measured op timeline vs simulation with the measured op times ({}/compare.svg):\n{}", step,
                  dir, cmp.table);
}

double PipelineRunner::evaluate(const std::vector<at::Tensor>& micro_batches) {
  train(false);
  const std::optional<std::vector<double>> losses = executor_->evaluate(micro_batches);
  train(true);
  double sum = 0;
  if (losses) {
    for (double l : *losses) sum += l;
  }
  at::Tensor total = at::tensor({sum}, at::kDouble);
  grid_.pp().all_reduce(total);
  return total.item<double>() / static_cast<double>(micro_batches.size());
}

at::Tensor PipelineRunner::expert_load() const {
  at::Tensor load = chunks_.front()->expert_load();
  for (size_t c = 1; c < chunks_.size(); ++c) load = load + chunks_[c]->expert_load();
  return load;
}

void PipelineRunner::update_routing_bias(const at::Tensor& counts) {
  for (auto& chunk : chunks_) {
    if (config_.model.n_routed_experts > 0) chunk->update_routing_bias(counts);
    chunk->reset_expert_load();
  }
}

void PipelineRunner::train(bool on) {
  for (auto& chunk : chunks_) chunk->train(on);
}

}  // namespace tandem::launch
