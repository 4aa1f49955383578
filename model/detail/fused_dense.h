// The transformer block's elementwise chains as fused CUDA kernels (model/kernels/dense_kernels.h)
// when the tensors are on a GPU, with the composite LibTorch form everywhere else (CPU tensors,
// builds without CUDA): rotary embedding and SwiGLU's gate, each with its own backward, and
// RMSNorm through LibTorch's fused kernel. Why: profiling the dense 1B benchmark step on an H100
// put these chains (select/multiply/stack, silu-then-multiply, pow/mean/rsqrt/multiply and their
// backward nodes) at about a fifth of the step; each fused form reads and writes every element
// once. The CPU path is left exactly as it was: the multi-rank equivalence tests run there.
#pragma once

#include <ATen/core/Tensor.h>

namespace tandem::model::detail {

struct RopeTables;

// x [..., T, d] rotated by position (interleaved pairs); see apply_rope in layers.h.
at::Tensor rotary_differentiable(const at::Tensor& x, const RopeTables& rope);
// The LibTorch form of the rotation; cos/sin [T, d/2] or anything broadcasting to x [..., T, d/2].
at::Tensor rotary_composite(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// silu(gate) * up, elementwise on equal shapes.
at::Tensor swiglu_gate_differentiable(const at::Tensor& gate, const at::Tensor& up);

// x * rsqrt(mean(x^2) + eps) * weight over the last dimension, statistics in at least fp32.
at::Tensor rms_norm_fused_or_composite(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace tandem::model::detail
