// The flat step runner (see step_runner.h): the whole model on every rank of a pp = 1 job.
// Per micro-batch: forward under the run's autocast, then backward with gradient 1/M while the
// data-parallel optimizer reduces each gradient bucket as soon as backward completes it (ZeRO
// 2/3 reduce-scatter every micro-batch); ZeRO-3 gathers each decoder layer's parameters around
// its use through the model's layer hooks.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "launch/train/pipeline_runner.h"
#include "launch/train/step_runner.h"
#include "model/autocast.h"
#include "model/model.h"
#include "parallel/data_parallel_optimizer.h"
#include "parallel/process_grid.h"
#include "runtime/error.h"

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
      model::LossPieces pieces;
      {
        const model::AutocastScope autocast(device_.device.type(), at::kBFloat16, device_.bf16());
        pieces = model_.forward_loss(micro_batches[static_cast<size_t>(micro)], loss_scale);
      }
      optimizer_->begin_backward(/*final_backward=*/micro == count - 1);
      torch::autograd::backward({pieces.loss}, {at::full({}, loss_scale, pieces.loss.options())});
      optimizer_->end_backward();
      loss_sums += stacked_losses(pieces) * loss_scale;
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
  const JobConfig& config_;
  TrainingDevice device_;
  bool is_root_;
  model::Model model_;
  parallel::DataParallelOptimizer* optimizer_ = nullptr;
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
