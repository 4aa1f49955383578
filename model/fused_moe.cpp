// Adapters from tensors to the raw-pointer MoE kernels (model/kernels/moe_kernels.h), with the
// LibTorch reference for CPU tensors, other dtypes and builds without CUDA. See detail/fused_moe.h.
#include "model/detail/fused_moe.h"

#include "model/detail/moe.h"
#include "runtime/error.h"

#ifdef TANDEM_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "model/detail/kernel_launch.h"
#endif

namespace tandem::model::detail {

bool fused_moe_kernels_available() {
#ifdef TANDEM_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

namespace {

void check_index(const at::Tensor& token_index, const char* what) {
  TANDEM_CHECK(token_index.dim() == 1 && token_index.scalar_type() == at::kLong,
               "{}: token_index must be a 1-d int64 tensor, got {} dims of {}", what, token_index.dim(),
               c10::toString(token_index.scalar_type()));
}

}  // namespace

std::pair<at::Tensor, at::Tensor> routing_topk(const at::Tensor& scores, const at::Tensor& bias,
                                               const RoutingOptions& o) {
  TANDEM_CHECK(scores.dim() == 2 && scores.size(1) == o.num_experts, "routing_topk: scores [{}] for {} experts",
               fmt::join(scores.sizes(), ", "), o.num_experts);
#ifdef TANDEM_HAVE_CUDA
  const int64_t per_group = o.num_experts / std::max<int64_t>(o.n_group, 1);
  // The kernel's limits (moe_kernels.h); anything else takes the reference, which explains itself.
  const bool fits = scores.is_cuda() && scores.scalar_type() == at::kFloat && o.sigmoid && o.num_experts <= 1024 &&
                    o.n_group >= 1 && o.n_group <= 32 && o.num_experts % o.n_group == 0 && o.topk_group >= 1 &&
                    o.topk_group <= o.n_group && o.top_k >= 1 && o.top_k <= 32 && o.top_k <= o.topk_group * per_group;
  if (fits) {
    const c10::cuda::CUDAGuard guard(scores.device());
    const at::Tensor s = scores.detach().contiguous();
    const at::Tensor b = bias.detach().to(s.device(), at::kFloat).contiguous();
    at::Tensor idx = at::empty({s.size(0), o.top_k}, s.options().dtype(at::kLong));
    at::Tensor weight = at::empty({s.size(0), o.top_k}, s.options());
    kernels::RoutingShape shape;
    shape.num_tokens = s.size(0);
    shape.num_experts = static_cast<int>(o.num_experts);
    shape.top_k = static_cast<int>(o.top_k);
    shape.n_group = static_cast<int>(o.n_group);
    shape.topk_group = static_cast<int>(o.topk_group);
    shape.norm_topk_prob = o.norm_topk_prob;
    shape.routed_scaling_factor = static_cast<float>(o.routed_scaling_factor);
    TANDEM_KERNEL_CHECK(kernels::launch_routing_topk(s.data_ptr<float>(), b.data_ptr<float>(), idx.data_ptr<int64_t>(),
                                                     weight.data_ptr<float>(), shape, current_stream(s)),
                        "kernels::launch_routing_topk");
    return {idx, weight};
  }
#endif
  const at::NoGradGuard no_grad;
  const at::Tensor idx = group_limited_topk(scores.detach() + bias.to(scores.device(), scores.scalar_type()), o);
  return {idx, gate_weights(scores.detach(), idx, o)};
}

at::Tensor permute_tokens(const at::Tensor& rows, const at::Tensor& token_index) {
  check_index(token_index, "permute_tokens");
#ifdef TANDEM_HAVE_CUDA
  if (rows.is_cuda() && token_index.is_cuda() && rows.dim() == 2) {
    const c10::cuda::CUDAGuard guard(rows.device());
    const at::Tensor in = rows.contiguous();
    const at::Tensor index = token_index.contiguous();
    at::Tensor out = at::empty({index.numel(), in.size(1)}, in.options());
    const int64_t row_bytes = in.size(1) * static_cast<int64_t>(in.element_size());
    TANDEM_KERNEL_CHECK(kernels::launch_permute_rows(in.data_ptr(), index.data_ptr<int64_t>(), out.data_ptr(),
                                                     index.numel(), row_bytes, current_stream(in)),
                        "kernels::launch_permute_rows");
    return out;
  }
#endif
  return rows.index_select(0, token_index);
}

at::Tensor unpermute_combine(const at::Tensor& expert_rows, const at::Tensor& gate, const at::Tensor& token_index,
                             int64_t num_tokens, std::optional<at::ScalarType> out_dtype) {
  check_index(token_index, "unpermute_combine");
  TANDEM_CHECK(expert_rows.dim() == 2 && expert_rows.size(0) == token_index.numel(),
               "unpermute_combine: {} expert rows for {} indices", expert_rows.size(0), token_index.numel());
#ifdef TANDEM_HAVE_CUDA
  const auto dtype = expert_rows.scalar_type();
  const at::ScalarType result_dtype = out_dtype.value_or(dtype);
  kernels::RowType type{};
  if (expert_rows.is_cuda() && token_index.is_cuda() && kernel_row_type(expert_rows, type)) {
    const c10::cuda::CUDAGuard guard(expert_rows.device());
    const at::Tensor rows = expert_rows.contiguous();
    const at::Tensor index = token_index.contiguous();
    const at::Tensor weights = gate.defined() ? gate.detach().to(at::kFloat).contiguous() : at::Tensor();
    at::Tensor out = at::zeros({num_tokens, rows.size(1)}, rows.options().dtype(at::kFloat));
    TANDEM_KERNEL_CHECK(kernels::launch_unpermute_combine(rows.data_ptr(), type,
                                                          weights.defined() ? weights.data_ptr<float>() : nullptr,
                                                          index.data_ptr<int64_t>(), out.data_ptr<float>(),
                                                          rows.size(0), rows.size(1), current_stream(rows)),
                        "kernels::launch_unpermute_combine");
    return out.to(result_dtype);  // fp32 stays as is
  }
#endif
  // As the kernel: products and sums in at least fp32, one rounding to the result at the end.
  const at::ScalarType result = out_dtype.value_or(expert_rows.scalar_type());
  const at::ScalarType compute = at::promote_types(at::promote_types(expert_rows.scalar_type(), result), at::kFloat);
  at::Tensor weighted = expert_rows.to(compute);  // [R, C]
  if (gate.defined()) weighted = weighted * gate.to(compute).unsqueeze(1);
  return at::zeros({num_tokens, expert_rows.size(1)}, expert_rows.options().dtype(compute))
      .index_add(0, token_index, weighted)
      .to(result);  // [N, C]
}

namespace {

struct PermuteTokens : torch::autograd::Function<PermuteTokens> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows,
                            const at::Tensor& token_index) {
    ctx->save_for_backward({token_index});
    ctx->saved_data["num_tokens"] = rows.size(0);
    return permute_tokens(rows, token_index);  // [R, C]
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor token_index = ctx->get_saved_variables()[0];
    const int64_t num_tokens = ctx->saved_data["num_tokens"].toInt();
    return {unpermute_combine(grads[0].contiguous(), at::Tensor(), token_index, num_tokens), at::Tensor()};  // [N, C]
  }
};

struct UnpermuteCombine : torch::autograd::Function<UnpermuteCombine> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& expert_rows,
                            const at::Tensor& gate, const at::Tensor& token_index, int64_t num_tokens,
                            at::ScalarType out_dtype) {
    ctx->save_for_backward({expert_rows, gate, token_index});
    return unpermute_combine(expert_rows, gate, token_index, num_tokens, out_dtype);  // [N, C]
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& expert_rows = saved[0];
    const at::Tensor& gate = saved[1];
    const at::Tensor& token_index = saved[2];
#ifdef TANDEM_HAVE_CUDA
    // One pass on the GPU: each row's token gradient read in place, scaled, and dotted with the
    // row (no permuted copy, no fp32 copies of both [R, C] operands).
    kernels::RowType type{};
    if (expert_rows.is_cuda() && grads[0].scalar_type() == expert_rows.scalar_type() && gate.is_cuda() &&
        kernel_row_type(expert_rows, type)) {
      const c10::cuda::CUDAGuard guard(expert_rows.device());
      const at::Tensor upstream = grads[0].contiguous();
      const at::Tensor rows = expert_rows.contiguous();
      const at::Tensor index = token_index.contiguous();
      const at::Tensor weights = gate.to(at::kFloat).contiguous();
      at::Tensor grad_expert = at::empty_like(rows);
      at::Tensor grad_gate = at::empty({rows.size(0)}, weights.options());
      TANDEM_KERNEL_CHECK(kernels::launch_unpermute_combine_backward(
                              upstream.data_ptr(), rows.data_ptr(), type, weights.data_ptr<float>(),
                              index.data_ptr<int64_t>(), grad_expert.data_ptr(), grad_gate.data_ptr<float>(),
                              rows.size(0), rows.size(1), current_stream(rows)),
                          "kernels::launch_unpermute_combine_backward");
      return {grad_expert, grad_gate.to(gate.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
    }
#endif
    const at::Tensor grad_rows = permute_tokens(grads[0].contiguous(), token_index);  // [R, C] in expert order
    const at::Tensor grad_expert =
        (grad_rows * gate.unsqueeze(1).to(grad_rows.scalar_type())).to(expert_rows.scalar_type());
    const at::Tensor grad_gate = (grad_rows.to(at::kFloat) * expert_rows.to(at::kFloat)).sum(1).to(gate.scalar_type());
    return {grad_expert, grad_gate, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor permute_tokens_differentiable(const at::Tensor& rows, const at::Tensor& token_index) {
  return PermuteTokens::apply(rows, token_index);
}

at::Tensor unpermute_combine_differentiable(const at::Tensor& expert_rows, const at::Tensor& gate,
                                            const at::Tensor& token_index, int64_t num_tokens,
                                            at::ScalarType out_dtype) {
  return UnpermuteCombine::apply(expert_rows, gate, token_index, num_tokens, out_dtype);
}

}  // namespace tandem::model::detail
