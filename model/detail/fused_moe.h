// The MoE's token movement and routing selection as fused CUDA kernels (model/kernels/) when the
// tensors are on a GPU, with the whole-tensor LibTorch form as the reference path everywhere else.
// None of these records autograd history: they are the forward data movement and the
// non-differentiable selection; gradients flow through the reference formulation's autograd or
// through the caller's own backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <utility>

namespace tandem::model::detail {

struct RoutingOptions;

// True when this build carries the CUDA kernels (a GPU is still needed to run them).
bool fused_moe_kernels_available();

// Group-limited top-k of route() on affinities that are already computed: scores [N, E],
// bias [E] (selection only) -> {topk_idx [N, K] int64, topk_weight [N, K] in scores' dtype}.
// The kernel runs for float32 CUDA scores with sigmoid routing; anything else takes the reference.
std::pair<at::Tensor, at::Tensor> routing_topk(const at::Tensor& scores, const at::Tensor& bias,
                                               const RoutingOptions& options);

// rows [N, C], token_index [R] int64 -> [R, C]: row r is rows[token_index[r]] (index_select).
at::Tensor permute_tokens(const at::Tensor& rows, const at::Tensor& token_index);

// expert_rows [R, C], gate [R] (undefined: 1), token_index [R] int64 -> [num_tokens, C] in
// `out_dtype` (default: expert_rows' dtype): each token row is the sum of gate[r] * expert_rows[r]
// over the rows r that came from it (index_add), accumulated in fp32 on the GPU.
at::Tensor unpermute_combine(const at::Tensor& expert_rows, const at::Tensor& gate, const at::Tensor& token_index,
                             int64_t num_tokens, std::optional<at::ScalarType> out_dtype = std::nullopt);

// Differentiable forms for the MoE layer (any device; the kernels run on CUDA):
//  - permute_tokens_differentiable: backward scatter-adds the row gradients onto the tokens;
//  - unpermute_combine_differentiable: backward gathers the output gradient back into expert
//    order for expert_rows (times gate) and for gate (its dot product with each expert row).
//    The output is in `out_dtype` (the token rows' dtype in the MoE layer, as its CPU path).
at::Tensor permute_tokens_differentiable(const at::Tensor& rows, const at::Tensor& token_index);
at::Tensor unpermute_combine_differentiable(const at::Tensor& expert_rows, const at::Tensor& gate,
                                            const at::Tensor& token_index, int64_t num_tokens,
                                            at::ScalarType out_dtype);

}  // namespace tandem::model::detail
