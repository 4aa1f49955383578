// The data-parallel optimizer's per-bucket AdamW step and gradient sum of squares, in one pass
// each on CUDA tensors (parallel/kernels/adamw_kernels.h) where the build has CUDA; elsewhere
// (CPU tensors, builds without CUDA) callers keep the LibTorch composite of adamw.h, whose bits
// the CPU equivalence tests depend on. The fused step follows the composite's fp32 operation
// order (kernels/adamw_math.h), so GPU and CPU runs agree to rounding. Both run asynchronously
// on the current CUDA stream of the tensors' device (no host synchronisation) and throw
// tandem::Error for tensors that are not 1-D contiguous fp32 on one CUDA device.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "parallel/adamw.h"
#include "parallel/bucket_layout.h"

namespace tandem::parallel {

// True when this build has the fused kernels and `t` lives on a CUDA device.
bool fused_optimizer_applies(const at::Tensor& t);

// One AdamW step on equal-length 1-D fp32 CUDA tensors: moments, decoupled decay on the elements
// inside `decay_runs` (sorted, disjoint, relative to the tensors), then the Adam step; `grad` is
// read unscaled and multiplied by `grad_scale` inside the kernel (no temporary).
void fused_adamw_step_(const at::Tensor& param, const at::Tensor& grad, const at::Tensor& exp_avg,
                       const at::Tensor& exp_avg_sq, const std::vector<ElementRun>& decay_runs,
                       const AdamWConfig& config, const AdamWStepScalars& scalars, double grad_scale);

// Runs of one 1-D fp32 tensor; `runs` must outlive the call.
struct TensorRuns {
  at::Tensor tensor;
  const std::vector<ElementRun>* runs = nullptr;
};

// Sum over the parts of sum(double(x)^2) over their runs, as a 0-dim float64 tensor on `device`
// (a CUDA device): the same bits run to run for the same inputs. Zero when there are no runs.
at::Tensor fused_sum_squares(const std::vector<TensorRuns>& parts, at::Device device);

}  // namespace tandem::parallel
