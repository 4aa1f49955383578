// The pipeline executor on real stages of the tiny MoE model (MLA, MoE with 8 experts, MTP, fp32)
// equals one process: for every schedule on pp = 2 (2 ranks) and pp = 4 (4 ranks), and DualPipe
// combined with dp = 2 and with ep = 2 (8 ranks), 20 SGD steps whose loss matches the
// single-process model's at every step to a relative 1e-5. The single-process reference runs on
// rank 0 over all micro-batches of the step (data-parallel ranks' micro-batches included) and
// broadcasts its losses. Also checked: the op order every rank ran is its generated list; with
// expert parallelism, overlapped pairs really alternate and give the same bits as running their
// halves one after the other; schedules the executor cannot run are refused with the reason.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/stage.h"
#include "parallel/param_sharding.h"
#include "parallel/process_grid.h"
#include "schedule/executor/executor.h"
#include "schedule/generators.h"
#include "tests/common/mpi_test_env.h"
#include "tests/unit/model/tiny_config.h"

namespace tandem::schedule {
namespace {

using parallel::GroupKind;
using test::MpiTestEnv;

constexpr uint64_t kSeed = 4321;
constexpr int64_t kBatch = 2;  // sequences per micro-batch
constexpr int64_t kSeq = 16;
constexpr int kSteps = 20;
constexpr double kLr = 0.05;
constexpr double kTolerance = 1e-5;

struct Case {
  std::string name;
  ScheduleKind kind;
  int pp;
  int dp = 1;
  int ep = 1;
  int world() const { return pp * dp; }
  int micro_batches() const { return 2 * pp; }  // what every kind accepts (DualPipe: M >= 2P)
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int pp : {2, 4}) {
    for (ScheduleKind kind : kAllScheduleKinds) {
      out.push_back({fmt::format("{} pp{}", schedule_kind_name(kind), pp), kind, pp});
    }
  }
  out.push_back({"dualpipe pp2 ep2", ScheduleKind::kDualPipe, 2, 2, 2});
  out.push_back({"dualpipe pp4 dp2", ScheduleKind::kDualPipe, 4, 2, 1});
  out.push_back({"dualpipe pp4 ep2", ScheduleKind::kDualPipe, 4, 2, 2});
  return out;
}

// The layout's grid and this rank's view of it.
struct RankSetup {
  parallel::GridLayout layout;
  parallel::ProcessGrid grid;
  model::ParallelGroups groups;
  Schedule schedule;
  int pp_rank;
  int dp_rank;
  RankSetup(const Case& c, const MpiTestEnv& env)
      : layout(parallel::GridLayout::create(env.world_size(), c.pp, c.dp, 1, c.ep, "tp-dp-pp")),
        grid(layout, env.process(), parallel::mpi_communicator_factory(MpiTestEnv::kCommTimeout)),
        schedule(generate(c.kind, c.pp, c.micro_batches())),
        pp_rank(static_cast<int>(grid.coord().pp)),
        dp_rank(static_cast<int>(grid.coord().dp)) {
    groups.ep = grid.shared(GroupKind::kExpert);
    groups.edp = grid.shared(GroupKind::kExpertData);
    groups.dp = grid.shared(GroupKind::kData);
  }

  std::vector<std::shared_ptr<model::Stage>> build_stages(const model::ModelConfig& config) const {
    const std::vector<model::StageSpec> specs = model::partition_layers(config, schedule.num_stages);
    std::vector<std::shared_ptr<model::Stage>> chunks;
    for (int c = 0; c < schedule.num_chunks; ++c) {
      chunks.push_back(model::Stage::build(config, kSeed, groups, specs[schedule.placement.stage_of(pp_rank, c)]));
    }
    return chunks;
  }
};

// Micro-batches of a step: dp * M of them, [kBatch, kSeq + 1] each, the same on every rank and
// every step (so the loss falls).
std::vector<at::Tensor> step_tokens(int count) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1000);
  std::vector<at::Tensor> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(at::randint(64, {kBatch, kSeq + 1}, gen, at::TensorOptions().dtype(at::kLong)));
  }
  return out;
}

void sgd(const std::vector<at::Tensor>& params) {
  torch::autograd::AutoGradMode no_grad(false);
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.sub_(p.grad(), kLr);
  }
}

void zero_grads(const std::vector<at::Tensor>& params) {
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

// The single-process losses of every step (mean over `total` = dp * M micro-batches), on rank 0.
std::vector<double> reference_losses(int total, const model::ModelConfig& config) {
  model::Model ref(config, kSeed);
  ref.train(true);
  const double scale = 1.0 / total;
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    zero_grads(ref.parameters());
    double loss = 0;
    for (const at::Tensor& tokens : step_tokens(total)) {
      const model::LossPieces pieces = ref.forward_loss(tokens, scale);
      torch::autograd::backward({pieces.loss}, {at::full({}, scale, pieces.loss.options())});
      loss += pieces.loss.item<double>() * scale;
    }
    sgd(ref.parameters());
    losses.push_back(loss);
  }
  return losses;
}

std::vector<at::Tensor> parameters_of(const std::vector<std::shared_ptr<model::Stage>>& chunks) {
  std::vector<at::Tensor> out;
  for (const auto& chunk : chunks) {
    for (auto& [name, p] : chunk->named_parameters()) out.push_back(p);
  }
  return out;
}

// Runs the case for kSteps on this rank; returns the mean loss of every step (all ranks agree).
std::vector<double> pipeline_losses(const Case& c, const model::ModelConfig& config, const RankSetup& setup,
                                    ExecutorOptions options) {
  auto chunks = setup.build_stages(config);
  for (auto& chunk : chunks) chunk->train(true);
  const int m = c.micro_batches();
  options.loss_scale = 1.0 / m;
  PipelineExecutor executor(setup.schedule, setup.pp_rank, chunks, setup.grid.shared(GroupKind::kPipeline), options);
  const std::vector<at::Tensor> params = parameters_of(chunks);
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    zero_grads(params);
    const std::vector<at::Tensor> all = step_tokens(c.dp * m);
    const std::vector<at::Tensor> mine(all.begin() + setup.dp_rank * m, all.begin() + (setup.dp_rank + 1) * m);
    const StepReport report = executor.run_step(mine);
    if (step == 0) {
      EXPECT_EQ(report.executed, setup.schedule.ranks[static_cast<size_t>(setup.pp_rank)])
          << c.name << ": pipeline rank " << setup.pp_rank << " ran its ops in another order";
      EXPECT_EQ(report.op_times.size(), setup.schedule.ranks[static_cast<size_t>(setup.pp_rank)].size());
      for (const OpTime& t : report.op_times) EXPECT_LE(t.start, t.end);
    }
    double sum = 0;
    for (const MicroBatchLosses& l : report.losses) sum += (l.has_head ? l.lm_loss + l.mtp_loss : 0) + l.aux_loss;
    at::Tensor total = at::tensor({sum}, at::kDouble);
    setup.grid.pp().all_reduce(total);
    setup.grid.dp().all_reduce(total);
    losses.push_back(total.item<double>() / (c.dp * m));
    for (const auto& chunk : chunks) {
      parallel::synchronize_gradients_reference(chunk->sharded_parameters(),
                                                {nullptr, setup.groups.dp, setup.groups.edp});
    }
    sgd(params);
  }
  return losses;
}

TEST(PipelineExecutor, EverySchedulePlaysLikeOneProcess) {
  const MpiTestEnv& env = MpiTestEnv::get();
  at::set_num_threads(1);
  const model::ModelConfig config = model::testing::tiny_config();
  // The reference runs on rank 0 alone while the others wait: a broadcast with a long timeout.
  const auto patient = env.make_communicator("reference", MPI_COMM_WORLD, std::chrono::minutes(5));
  std::map<int, at::Tensor> references;  // by micro-batches per step: cases of one size share it
  int ran = 0;
  for (const Case& c : cases()) {
    if (c.world() != env.world_size()) continue;
    SCOPED_TRACE(c.name);
    const RankSetup setup(c, env);
    const std::vector<double> got = pipeline_losses(c, config, setup, {});
    const int total = c.dp * c.micro_batches();
    if (!references.count(total)) {
      at::Tensor losses = at::zeros({kSteps}, at::kDouble);
      if (env.rank() == 0) losses = at::tensor(reference_losses(total, config), at::kDouble);
      patient->broadcast(losses, 0);
      references[total] = losses;
    }
    const at::Tensor& want = references.at(total);
    double worst = 0;
    for (int step = 0; step < kSteps; ++step) {
      const double ref = want[step].item<double>();
      const double diff = std::abs(got[static_cast<size_t>(step)] - ref) / std::abs(ref);
      EXPECT_LT(diff, kTolerance) << c.name << " step " << step + 1 << ": " << got[static_cast<size_t>(step)]
                                  << " vs one process " << ref;
      worst = std::max(worst, diff);
    }
    if (env.rank() == 0) {
      std::printf("[%s] loss %.6f -> %.6f over %d steps, worst relative difference to one process %.2e\n",
                  c.name.c_str(), got.front(), got.back(), kSteps, worst);
    }
    ++ran;
  }
  EXPECT_GT(ran, 0);
}

// Gradients of one step, by (chunk, name).
std::map<std::string, at::Tensor> one_step_grads(const Case& c, const model::ModelConfig& config,
                                                 const RankSetup& setup, bool overlap, long long* switches) {
  auto chunks = setup.build_stages(config);
  for (auto& chunk : chunks) chunk->train(true);
  ExecutorOptions options;
  options.overlap_pairs = overlap;
  options.loss_scale = 1.0 / c.micro_batches();
  PipelineExecutor executor(setup.schedule, setup.pp_rank, chunks, setup.grid.shared(GroupKind::kPipeline), options);
  const std::vector<at::Tensor> all = step_tokens(c.dp * c.micro_batches());
  const auto begin = all.begin() + setup.dp_rank * c.micro_batches();
  *switches = executor.run_step(std::vector<at::Tensor>(begin, begin + c.micro_batches())).pair_switches;
  std::map<std::string, at::Tensor> grads;
  for (size_t k = 0; k < chunks.size(); ++k) {
    for (auto& [name, p] : chunks[k]->named_parameters()) grads[fmt::format("{}/{}", k, name)] = p.grad().clone();
  }
  return grads;
}

TEST(PipelineExecutor, OverlappedPairsAlternateAndGiveTheSameBits) {
  const MpiTestEnv& env = MpiTestEnv::get();
  at::set_num_threads(1);
  const model::ModelConfig config = model::testing::tiny_config();
  for (const Case& c : cases()) {
    if (c.world() != env.world_size() || c.kind != ScheduleKind::kDualPipe) continue;
    SCOPED_TRACE(c.name);
    const RankSetup setup(c, env);
    long long switches_on = 0, switches_off = 0;
    const auto overlapped = one_step_grads(c, config, setup, true, &switches_on);
    const auto sequential = one_step_grads(c, config, setup, false, &switches_off);
    EXPECT_EQ(switches_off, 0);
    // Every pair has MoE layers on both sides (each stage holds one MoE layer or the MTP block).
    EXPECT_GT(switches_on, 0) << c.name << ": the pairs never handed over";
    ASSERT_EQ(overlapped.size(), sequential.size());
    for (const auto& [name, grad] : overlapped) {
      EXPECT_TRUE(at::equal(grad, sequential.at(name))) << c.name << ": gradient of " << name << " differs";
    }
    if (env.rank() == 0)
      std::printf("[%s] %lld hand-overs in one step's pairs, bit-identical\n", c.name.c_str(), switches_on);
  }
}

TEST(PipelineExecutor, EvaluationEqualsOneProcess) {
  const MpiTestEnv& env = MpiTestEnv::get();
  at::set_num_threads(1);
  const model::ModelConfig config = model::testing::tiny_config();
  const std::vector<at::Tensor> tokens = step_tokens(3);
  model::Model ref(config, kSeed);
  ref.train(false);
  for (const Case& c : cases()) {
    if (c.world() != env.world_size() || c.dp > 1) continue;
    if (c.kind != ScheduleKind::kDualPipe && c.kind != ScheduleKind::kDualPipeV && c.kind != ScheduleKind::kInterleaved)
      continue;
    SCOPED_TRACE(c.name);
    const RankSetup setup(c, env);
    auto chunks = setup.build_stages(config);
    for (auto& chunk : chunks) chunk->train(false);
    PipelineExecutor executor(setup.schedule, setup.pp_rank, chunks, setup.grid.shared(GroupKind::kPipeline));
    const std::optional<std::vector<double>> losses = executor.evaluate(tokens);
    const Placement& placement = setup.schedule.placement;
    const bool has_head = placement.slot_of(0, placement.num_stages() - 1).rank == setup.pp_rank;
    ASSERT_EQ(losses.has_value(), has_head);
    if (!losses) continue;
    ASSERT_EQ(losses->size(), tokens.size());
    for (size_t e = 0; e < tokens.size(); ++e) {
      const double want = ref.forward_loss(tokens[e]).lm_loss.item<double>();
      EXPECT_NEAR((*losses)[e], want, kTolerance * want) << "micro-batch " << e;
    }
  }
}

TEST(PipelineExecutor, RefusesWhatItCannotRun) {
  const MpiTestEnv& env = MpiTestEnv::get();
  const model::ModelConfig config = model::testing::tiny_config();
  const Case c{"1f1b", ScheduleKind::k1F1B, env.world_size()};
  const RankSetup setup(c, env);
  auto chunks = setup.build_stages(config);
  const auto pp = setup.grid.shared(GroupKind::kPipeline);
  // The wrong stage for this rank.
  std::vector<std::shared_ptr<model::Stage>> wrong = setup.build_stages(config);
  if (env.world_size() > 1) {
    const auto specs = model::partition_layers(config, setup.schedule.num_stages);
    wrong[0] = model::Stage::build(config, kSeed, setup.groups, specs[(setup.pp_rank + 1) % env.world_size()]);
    EXPECT_THROW(PipelineExecutor(setup.schedule, setup.pp_rank, wrong, pp), Error);
  }
  // A W order that a FIFO cannot follow: two B's, their W's swapped.
  Schedule swapped = make_empty_schedule(ScheduleKind::kZb1p, 1, 2, 1);
  swapped.ranks[0] = {Op::single(OpKind::kF, 0), Op::single(OpKind::kF, 1), Op::single(OpKind::kB, 0),
                      Op::single(OpKind::kB, 1), Op::single(OpKind::kW, 1), Op::single(OpKind::kW, 0)};
  ASSERT_TRUE(weight_fifo_problem(swapped).has_value());
  EXPECT_NE(weight_fifo_problem(swapped)->find("first-in-first-out"), std::string::npos);
  for (ScheduleKind kind : kAllScheduleKinds) {
    EXPECT_FALSE(weight_fifo_problem(generate(kind, 4, 8)).has_value()) << schedule_kind_name(kind);
  }
  EXPECT_FALSE(weight_fifo_problem(generate(ScheduleKind::kInterleaved, 4, 8, 3)).has_value());
}

}  // namespace
}  // namespace tandem::schedule
