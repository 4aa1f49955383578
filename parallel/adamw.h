// AdamW over flat parameter groups (flat_params.h), optionally sharded (ZeRO): each rank keeps
// the first and second moments of its own shard only and updates only that shard of the flat
// parameter buffer; gathering the updated shards back to every rank is the caller's (ZeRO's)
// step, so this class does no communication.
// Update, per element of the shard, with step count t (1-based), lr, and gradient g already
// averaged, scaled for clipping, and reduced to this shard:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p - lr * wd * mask * p                        (decoupled weight decay, Loshchilov & Hutter)
//   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "parallel/flat_params.h"

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

class AdamW {
 public:
  // Groups are borrowed and must outlive the optimizer. State starts at zero.
  AdamW(std::vector<FlatParamGroup*> groups, AdamWConfig config);

  // One update of every group's shard. `grad_scale` multiplies the gradients first (global-norm
  // clipping: min(1, clip / norm)). Not thread-safe; no communication.
  void step(double lr, double grad_scale = 1.0);

  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps) { step_count_ = steps; }  // checkpoint resume
  // Moments of group i's shard: [shard_numel] fp32 each (checkpoint save/load by slicing).
  at::Tensor& exp_avg(size_t group) { return exp_avg_[group]; }
  at::Tensor& exp_avg_sq(size_t group) { return exp_avg_sq_[group]; }
  const std::vector<FlatParamGroup*>& groups() const { return groups_; }

 private:
  std::vector<FlatParamGroup*> groups_;
  AdamWConfig config_;
  int64_t step_count_ = 0;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
};

}  // namespace tandem::parallel
