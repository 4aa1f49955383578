// Fused MoE kernels behind a torch-free, raw-pointer API (model/fused_moe.cpp adapts tensors):
//  - routing top-k for sigmoid scores with group-limited selection, the math of
//    model/routing.cpp's route() (selection = scores + bias, a group scores the sum of its two best
//    selection values, weights from the unbiased scores, normalised, times the scaling factor);
//  - token permute: gather token rows into expert order;
//  - un-permute with weighted combine: scatter-add of the expert output rows, each times its gate,
//    back onto the token rows (fp32 accumulation), and its backward in one pass.
// Every launch is asynchronous on `stream` (a cudaStream_t; null = the legacy default stream) and
// returns the cudaError_t of the launch as an int (0 = success); argument errors return
// cudaErrorInvalidValue without launching. Pointers are device pointers. Ties between equal
// selection values go to the lower expert index.
#pragma once

#include <cstdint>

#include "runtime/cuda_stream.h"

namespace tandem::model::kernels {

struct RoutingShape {
  int64_t num_tokens = 0;  // N
  int num_experts = 0;     // E (<= 1024)
  int top_k = 1;           // K (<= 32, <= topk_group * E / n_group)
  int n_group = 1;         // G (divides E)
  int topk_group = 1;      // groups kept per token (<= G)
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

// scores [N, E] fp32 (sigmoid affinities), bias [E] fp32 (selection only; may be null = zeros)
// -> topk_idx [N, K] int64 in descending selection order, topk_weight [N, K] fp32.
int launch_routing_topk(const float* scores, const float* bias, int64_t* topk_idx, float* topk_weight,
                        const RoutingShape& shape, runtime::CudaStream stream);

// Element storage of rows: the kernels only move or accumulate them.
enum class RowType { kFloat32, kBFloat16, kFloat16 };

// out[r, :] = in[token_index[r], :] for r < num_rows; rows of row_bytes bytes (any element type:
// a permute is a copy). token_index values must lie in [0, num_tokens).
int launch_permute_rows(const void* in, const int64_t* token_index, void* out, int64_t num_rows, int64_t row_bytes,
                        runtime::CudaStream stream);

// out[token_index[r], :] += gate[r] * rows[r, :] (gate null = 1), accumulated in fp32 with atomic
// adds (the order of a token's K contributions is not fixed, as with index_add on CUDA).
// rows [num_rows, hidden] of `type`; out [num_tokens, hidden] fp32, zeroed (or holding a base) by
// the caller.
int launch_unpermute_combine(const void* rows, RowType type, const float* gate, const int64_t* token_index, float* out,
                             int64_t num_rows, int64_t hidden, runtime::CudaStream stream);

// The backward of the weighted combine, reading each expert row's token gradient in place (no
// permuted copy): grad_rows[r, :] = gate[r] * grad_out[token_index[r], :] (rounded once to
// `type`) and grad_gate[r] = sum_c grad_out[token_index[r], c] * rows[r, c], accumulated in fp32.
// grad_out [num_tokens, hidden] and rows, grad_rows [num_rows, hidden] all of `type`; gate,
// grad_gate [num_rows] fp32.
int launch_unpermute_combine_backward(const void* grad_out, const void* rows, RowType type, const float* gate,
                                      const int64_t* token_index, void* grad_rows, float* grad_gate, int64_t num_rows,
                                      int64_t hidden, runtime::CudaStream stream);

}  // namespace tandem::model::kernels
