// The flat step runner (see step_runner.h): the whole model on every rank of a pp = 1 job.
// Per micro-batch: forward under the run's autocast, then backward with gradient 1/M while the
// data-parallel optimizer reduces each gradient bucket as soon as backward completes it (ZeRO
// 2/3 reduce-scatter every micro-batch); ZeRO-3 gathers each decoder layer's parameters around
// its use through the model's layer hooks. With train.cuda_graph each micro-batch's forward and
// backward replay one CUDA graph (graphed_step.h) and the buckets are reduced after the last one.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <memory>

#include "launch/train/graphed_step.h"
#include "launch/train/pipeline_runner.h"
#include "launch/train/step_runner.h"
#include "model/autocast.h"
#include "model/model.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/process_grid.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace tandem::launch {
namespace {

// [loss, lm, mtp, aux] of one micro-batch as one fp64 tensor on the loss's device (undefined = 0).
at::Tensor stacked_losses(const model::LossPieces& pieces) {
  const at::Tensor zero = at::zeros({}, pieces.loss.options().dtype(at::kDouble));
  auto piece = [&](const at::Tensor& t) { return t.defined() ? t.detach().to(at::kDouble) : zero; };
  return at::stack({piece(pieces.loss), piece(pieces.lm_loss), piece(pieces.mtp_loss), piece(pieces.aux_loss)});
}

class FlatRunner final : public StepRunner {
 public:
  FlatRunner(const JobConfig& config, const model::ParallelGroups& groups, const TrainingDevice& device,
             std::shared_ptr<const model::Objective> objective, bool is_root)
      : config_(config),
        device_(device),
        is_root_(is_root),
        model_(config.model, static_cast<uint64_t>(config.run.seed), groups) {
    // Built on the CPU (initialisation is a pure function of seed and name), then moved, before
    // the optimizer's flat buffers are made: fp32 master weights on the run device.
    model_.whole().set_objective(std::move(objective));
    model_.whole().set_recompute(config.train.recompute_policy());
    model_.to(device.device);
    model_.train(true);
  }

  std::vector<parallel::ShardedParam> sharded_parameters() const override { return model_.sharded_parameters(); }
  std::vector<bool> counted_parameters() const override { return {}; }

  void attach(parallel::DataParallelOptimizer& optimizer) override {
    optimizer_ = &optimizer;
    if (config_.parallel.zero == 3) model_.set_layer_hooks(optimizer.layer_hooks());
  }

  StepLosses forward_backward(const std::vector<at::Tensor>& micro_batches, int64_t /*step*/) override {
    TANDEM_CHECK(optimizer_ != nullptr, "FlatRunner::forward_backward before attach()");
    const auto count = static_cast<int64_t>(micro_batches.size());
    const double loss_scale = 1.0 / static_cast<double>(count);
    // Loss pieces accumulate on the device; one copy to the host per step (no sync per micro-batch).
    at::Tensor loss_sums = at::zeros({4}, at::TensorOptions().dtype(at::kDouble).device(device_.device));
    for (int64_t micro = 0; micro < count; ++micro) {
      const at::Tensor& tokens = micro_batches[static_cast<size_t>(micro)];
      if (config_.train.cuda_graph) {
        // The graph cannot hold the bucket reductions (collectives, host bookkeeping): no backward
        // is armed, and finish_gradient_sync reduces every bucket after the last micro-batch.
        optimizer_->begin_backward(/*final_backward=*/false);
        GraphedMicroStep& graphed_step = graphed(loss_scale);
        loss_sums += graphed_step.run(tokens) * loss_scale;
        optimizer_->end_backward();
        if (!logged_capture_ && graphed_step.captured() && is_root_) {
          TANDEM_LOG_INFO("train", "cuda graph: each micro-batch's forward and backward now replay as one graph");
        }
        logged_capture_ = graphed_step.captured();
        continue;
      }
      optimizer_->begin_backward(/*final_backward=*/micro == count - 1);
      loss_sums += forward_backward_one(tokens, loss_scale) * loss_scale;
      optimizer_->end_backward();
    }
    const at::Tensor sums = loss_sums.to(at::kCPU);
    return {sums[0].item<double>(), sums[1].item<double>(), sums[2].item<double>(), sums[3].item<double>()};
  }

  double evaluate(const std::vector<at::Tensor>& micro_batches) override {
    model_.train(false);
    torch::autograd::AutoGradMode no_grad(false);
    const model::AutocastScope autocast(device_.device.type(), at::kBFloat16, device_.bf16());
    at::Tensor sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device_.device));
    for (const at::Tensor& tokens : micro_batches) sum += model_.forward_loss(tokens).lm_loss.detach().to(at::kDouble);
    const double mean = (sum / static_cast<double>(micro_batches.size())).to(at::kCPU).item<double>();
    model_.train(true);
    return mean;
  }

  at::Tensor expert_load() const override { return model_.expert_load(); }

  void update_routing_bias(const at::Tensor& counts) override {
    if (config_.model.n_routed_experts > 0) model_.update_routing_bias(counts);
    model_.reset_expert_load();
  }

  std::vector<std::pair<std::string, at::Tensor>> named_buffers(bool stored_only) const override {
    // Buffers are identical on every rank of a flat job: rank 0 stores them.
    if (stored_only && !is_root_) return {};
    return model_.named_buffers();
  }

 private:
  // One micro-batch's forward under the run's autocast and its backward with gradient
  // `loss_scale`; returns its stacked loss pieces.
  at::Tensor forward_backward_one(const at::Tensor& tokens, double loss_scale) {
    model::LossPieces pieces;
    {
      const model::AutocastScope autocast(device_.device.type(), at::kBFloat16, device_.bf16());
      pieces = model_.forward_loss(tokens, loss_scale);
    }
    torch::autograd::backward({pieces.loss}, {at::full({}, loss_scale, pieces.loss.options())});
    return stacked_losses(pieces);
  }

  // The recorded micro-batch (made on first use: the loss scale is part of the recording). Two
  // eager runs first: the rotary tables, cuBLAS/cuDNN workspaces and autotuning settle.
  GraphedMicroStep& graphed(double loss_scale) {
    if (!graphed_) {
      TANDEM_CHECK_KIND(kConfig, device_.device.is_cuda(),
                        "train.cuda_graph needs a GPU, but this rank trains on {}; set run.device: cuda or "
                        "train.cuda_graph: false",
                        device_.device.str());
      TANDEM_CHECK_KIND(kConfig, device_.bf16() || config_.model.n_routed_experts == 0,
                        "train.cuda_graph: the routed experts' fp32 grouped GEMMs read the expert boundaries on the "
                        "host, which a CUDA graph cannot; train in bf16 (train.precision: bf16 or auto)");
      graphed_ = std::make_unique<GraphedMicroStep>(
          [this, loss_scale](const at::Tensor& tokens) { return forward_backward_one(tokens, loss_scale); },
          /*eager_runs=*/2);
      graphed_scale_ = loss_scale;
    }
    TANDEM_CHECK(loss_scale == graphed_scale_, "train.cuda_graph: the micro-batch count changed during the run");
    return *graphed_;
  }

  const JobConfig& config_;
  TrainingDevice device_;
  bool is_root_;
  model::Model model_;
  parallel::DataParallelOptimizer* optimizer_ = nullptr;
  std::unique_ptr<GraphedMicroStep> graphed_;
  double graphed_scale_ = 0;
  bool logged_capture_ = false;
};

}  // namespace

std::unique_ptr<StepRunner> make_step_runner(const JobConfig& config, const parallel::ProcessGrid& grid,
                                             const model::ParallelGroups& groups, const TrainingDevice& device,
                                             std::shared_ptr<const model::Objective> objective) {
  if (uses_pipeline(config))
    return std::make_unique<PipelineRunner>(config, grid, groups, device, std::move(objective));
  return std::make_unique<FlatRunner>(config, groups, device, std::move(objective), grid.rank() == 0);
}

}  // namespace tandem::launch
