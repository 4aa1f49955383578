// AdamW over flat shards (see adamw.h). Whole-shard tensor ops: no per-parameter loop.
#include "parallel/adamw.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cmath>

namespace tandem::parallel {

double clip_scale(double grad_norm, double max_norm) {
  if (max_norm <= 0 || grad_norm <= max_norm) return 1.0;
  return max_norm / (grad_norm + 1e-6);
}

AdamWStepScalars adamw_step_scalars(const AdamWConfig& config, int64_t step_count, double lr) {
  const double t = static_cast<double>(step_count);
  return {lr, 1.0 - std::pow(config.beta1, t), 1.0 - std::pow(config.beta2, t)};
}

void adamw_update_moments_(const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                           const AdamWConfig& config) {
  exp_avg.mul_(config.beta1).add_(grad, 1.0 - config.beta1);
  exp_avg_sq.mul_(config.beta2).addcmul_(grad, grad, 1.0 - config.beta2);
}

void adamw_apply_decay_(at::Tensor& param, const AdamWConfig& config, const AdamWStepScalars& scalars) {
  if (config.weight_decay != 0.0) param.add_(param, -scalars.lr * config.weight_decay);
}

void adamw_apply_step_(at::Tensor& param, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                       const AdamWConfig& config, const AdamWStepScalars& scalars) {
  const at::Tensor denom = (exp_avg_sq / scalars.bias2).sqrt_().add_(config.eps);
  param.addcdiv_(exp_avg, denom, -scalars.lr / scalars.bias1);
}

AdamW::AdamW(std::vector<FlatParamGroup*> groups, AdamWConfig config) : groups_(std::move(groups)), config_(config) {
  for (FlatParamGroup* group : groups_) {
    exp_avg_.push_back(at::zeros({group->shard_numel()}, group->params().options()));
    exp_avg_sq_.push_back(at::zeros({group->shard_numel()}, group->params().options()));
  }
}

void AdamW::step(double lr, double grad_scale) {
  torch::autograd::AutoGradMode no_grad(false);
  ++step_count_;
  const AdamWStepScalars scalars = adamw_step_scalars(config_, step_count_, lr);
  for (size_t i = 0; i < groups_.size(); ++i) {
    FlatParamGroup& group = *groups_[i];
    at::Tensor param = group.shard_of(group.params());
    at::Tensor grad = group.shard_of(group.grads());
    if (grad_scale != 1.0) grad = grad * grad_scale;
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    adamw_update_moments_(grad, m, v, config_);
    if (config_.weight_decay != 0.0) {
      param.addcmul_(group.shard_of(group.decay_mask()), param, -lr * config_.weight_decay);
    }
    adamw_apply_step_(param, m, v, config_, scalars);
  }
}

}  // namespace tandem::parallel
