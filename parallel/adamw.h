// AdamW as pieces on tensors the caller lays out (the data-parallel optimizer applies them per
// gradient bucket to the elements it updates: all of them, or its ZeRO shard); no communication.
// Update, per element, with step count t (1-based), lr, and gradient g already averaged, scaled
// for clipping, and reduced to the elements updated:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p - lr * wd * p    on decayed elements only   (decoupled weight decay, Loshchilov & Hutter)
//   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tandem::parallel {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// Global-norm clipping factor: min(1, max_norm / norm), 1 when clipping is off (max_norm <= 0).
// The small epsilon keeps the clipped norm just under max_norm, as in torch's clip_grad_norm_.
double clip_scale(double grad_norm, double max_norm);

// The per-step scalars of the update above, for step count t (1-based).
struct AdamWStepScalars {
  double lr = 0;
  double bias1 = 1;  // 1 - b1^t
  double bias2 = 1;  // 1 - b2^t
};
AdamWStepScalars adamw_step_scalars(const AdamWConfig& config, int64_t step_count, double lr);

// The pieces of one update on contiguous fp32 tensors of equal length, for callers that keep
// parameters, gradients and moments in their own layout (the data-parallel optimizer works per
// bucket). Call in this order: moments, decay (on the decayed elements only), then the Adam
// step. No communication; `grad` is already scaled for clipping.
void adamw_update_moments_(const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                           const AdamWConfig& config);
void adamw_apply_decay_(at::Tensor& param, const AdamWConfig& config, const AdamWStepScalars& scalars);
void adamw_apply_step_(at::Tensor& param, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                       const AdamWConfig& config, const AdamWStepScalars& scalars);

}  // namespace tandem::parallel
