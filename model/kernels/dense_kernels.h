// Fused elementwise kernels of the transformer block behind a torch-free, raw-pointer API
// (model/fused_dense.cpp adapts tensors and autograd):
//  - rotary embedding on interleaved pairs (x0, x1), (x2, x3), ... of the last dimension: one
//    read and one write per element instead of the select/multiply/stack chain, and its backward
//    (the same rotation by the negated angle);
//  - SwiGLU's gate: out = silu(gate) * up, and its backward (d_gate and d_up in one pass).
// Arithmetic is fp32; values are stored in the tensors' type with the same roundings as
// LibTorch's silu-then-multiply on that type (silu rounded to the type, then the product), so
// the fused path follows the composite one to the type's rounding.
// Every launch is asynchronous on `stream` (a cudaStream_t; null = legacy default stream) and
// returns the cudaError_t of the launch as an int (0 = success); argument errors return
// cudaErrorInvalidValue without launching. Pointers are device pointers to contiguous data.
#pragma once

#include <cstdint>

#include "model/kernels/moe_kernels.h"  // RowType
#include "runtime/cuda_stream.h"

namespace tandem::model::kernels {

// x, out: `rows` rows of `width` elements of `type`, width even, laid out as [outer, positions,
// heads, width] (heads = 1 for [..., positions, width]): row r is at position (r / heads) %
// positions. cos, sin: fp32 [>= positions, width / 2] (row p for position p).
// out[r, 2i]   = x[r, 2i] cos[p, i] - x[r, 2i+1] sin[p, i]
// out[r, 2i+1] = x[r, 2i] sin[p, i] + x[r, 2i+1] cos[p, i]
// inverse = true rotates by the negated angle (sin -> -sin): the backward of the above.
// out may equal x (in place).
int launch_rotary(const void* x, void* out, RowType type, const float* cos, const float* sin, int64_t rows,
                  int64_t positions, int64_t heads, int64_t width, bool inverse, runtime::CudaStream stream);

// out = silu(gate) * up over n elements of `type`.
int launch_swiglu_forward(const void* gate, const void* up, void* out, RowType type, int64_t n,
                          runtime::CudaStream stream);

// Given d_out: d_up = d_out * silu(gate), d_gate = silu'(gate) * (d_out * up).
int launch_swiglu_backward(const void* gate, const void* up, const void* d_out, void* d_gate, void* d_up, RowType type,
                           int64_t n, runtime::CudaStream stream);

}  // namespace tandem::model::kernels
