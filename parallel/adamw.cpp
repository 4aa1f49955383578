// AdamW pieces (see adamw.h): whole-tensor ops, no per-parameter loop.
#include "parallel/adamw.h"

#include <ATen/ATen.h>

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

}  // namespace tandem::parallel
