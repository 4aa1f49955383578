// Fused optimizer kernels behind a torch-free, raw-pointer API (parallel/fused_optimizer.cpp adapts
// the data-parallel optimizer's buckets to them):
//  - AdamW: one pass over contiguous fp32 segments reading param, grad, exp_avg, exp_avg_sq and
//    writing param and both moments, with the math and operation order of adamw_math.h (the
//    LibTorch composite of parallel/adamw.cpp), in place of ~9 elementwise passes;
//  - sum of squares of fp32 segments in fp64 (the gradient-norm contribution), deterministic: a
//    fixed grid accumulates per-block partials in a fixed order and one block adds them up, so
//    the same segments give the same bits run to run (no floating-point atomics; the split into
//    vector and scalar parts follows the addresses modulo 16, fixed for a bucket's buffers).
// Many segments go into one launch (their table travels in the kernel's parameters, no host to
// device copy). Every launch is asynchronous on `stream` (a cudaStream_t; null = the legacy
// default stream) and returns the cudaError_t of the first failing launch as an int (0 =
// success); argument errors return cudaErrorInvalidValue without launching. Pointers are device
// pointers; segments of one call must not overlap one another.
#pragma once

#include <cstdint>

#include "parallel/kernels/adamw_math.h"
#include "runtime/cuda_stream.h"

namespace tandem::parallel::kernels {

// A contiguous run of `numel` elements updated together; `decay` applies decoupled weight decay.
struct AdamWSegment {
  float* param = nullptr;
  const float* grad = nullptr;  // unscaled: the kernel multiplies by AdamWScalars::grad_scale
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  int64_t numel = 0;
  bool decay = false;
};

// Applies one AdamW step to every segment (host array of `num_segments`).
int launch_adamw_segments(const AdamWSegment* segments, int64_t num_segments, const AdamWScalars& scalars,
                          runtime::CudaStream stream);

struct FloatSegment {
  const float* data = nullptr;
  int64_t numel = 0;
};

// Doubles of device scratch launch_sum_squares needs (per-block partials).
int64_t sum_squares_scratch_numel();

// *out (one device double) = sum over the segments of sum(double(x)^2). `scratch` holds
// sum_squares_scratch_numel() device doubles, untouched by others until the launches finish.
int launch_sum_squares(const FloatSegment* segments, int64_t num_segments, double* scratch, double* out,
                       runtime::CudaStream stream);

}  // namespace tandem::parallel::kernels
