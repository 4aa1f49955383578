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

AdamW::AdamW(std::vector<FlatParamGroup*> groups, AdamWConfig config) : groups_(std::move(groups)), config_(config) {
  for (FlatParamGroup* group : groups_) {
    exp_avg_.push_back(at::zeros({group->shard_numel()}, group->params().options()));
    exp_avg_sq_.push_back(at::zeros({group->shard_numel()}, group->params().options()));
  }
}

void AdamW::step(double lr, double grad_scale) {
  torch::autograd::AutoGradMode no_grad(false);
  ++step_count_;
  const double t = static_cast<double>(step_count_);
  const double bias1 = 1.0 - std::pow(config_.beta1, t);
  const double bias2 = 1.0 - std::pow(config_.beta2, t);
  for (size_t i = 0; i < groups_.size(); ++i) {
    FlatParamGroup& group = *groups_[i];
    at::Tensor param = group.shard_of(group.params());
    at::Tensor grad = group.shard_of(group.grads());
    if (grad_scale != 1.0) grad = grad * grad_scale;
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    m.mul_(config_.beta1).add_(grad, 1.0 - config_.beta1);
    v.mul_(config_.beta2).addcmul_(grad, grad, 1.0 - config_.beta2);
    if (config_.weight_decay != 0.0) {
      param.addcmul_(group.shard_of(group.decay_mask()), param, -lr * config_.weight_decay);
    }
    const at::Tensor denom = (v / bias2).sqrt_().add_(config_.eps);
    param.addcdiv_(m, denom, -lr / bias1);
  }
}

}  // namespace tandem::parallel
