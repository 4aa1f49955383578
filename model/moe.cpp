// The MoE layer: shared experts plus routed experts, token work grouped per expert. Forward
// phases (moe.h): route in >= fp32 -> count load -> permute token rows into expert order ->
// one SwiGLU call per expert on its contiguous block -> weight by gate and scatter-add back.
#include <cmath>

#include "model/detail/moe.h"
#include "runtime/error.h"

namespace tandem::model::detail {

RouterImpl::RouterImpl(int64_t dim, int64_t num_experts) {
  weight = register_parameter("weight", torch::empty({num_experts, dim}));
  e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({num_experts}));
}

MoEImpl::MoEImpl(const ModelConfig& c, int64_t layer)
    : options_(routing_options(c)), aux_alpha_(c.aux_loss_alpha), capacity_factor_(c.capacity_factor) {
  gate = register_module("gate", Router(c.hidden_size, c.n_routed_experts));
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < c.n_routed_experts; ++e) experts->push_back(SwiGLU(c.hidden_size, c.moe_intermediate_size));
  if (c.n_shared_experts > 0) {
    shared_experts =
        register_module("shared_experts", SwiGLU(c.hidden_size, c.n_shared_experts * c.moe_intermediate_size));
  }
  load_ = torch::zeros({c.n_routed_experts}, torch::kLong);
}

at::Tensor MoEImpl::forward(const at::Tensor& x, ForwardContext& ctx) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  const int64_t n = b * t;
  const int64_t num_experts = options_.num_experts;
  const at::Tensor x2 = x.reshape({n, d});  // [N, C]

  // 1. Route, in at least fp32 (MODEL.md).
  const at::ScalarType compute = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor logits = split_linear(x2.to(compute), gate->weight.to(compute), ctx.queue);  // [N, E]
  Routing routing = route(logits, gate->e_score_correction_bias, options_);
  if (is_training()) {
    torch::NoGradGuard no_grad;
    load_ += expert_counts(routing.topk_idx, num_experts).to(load_.device());
  }

  // 2. Permute token rows into expert order (EP dispatch goes here).
  const int64_t capacity =
      capacity_factor_ > 0 ? static_cast<int64_t>(std::ceil(capacity_factor_ * n * options_.top_k / num_experts)) : 0;
  const DispatchPlan plan = plan_dispatch(routing, num_experts, capacity);
  dropped_ += plan.dropped;
  const at::Tensor rows = x2.index_select(0, plan.token_index);  // [R, C]

  // 3. One call per expert on its contiguous block of rows.
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t count = plan.rows_per_expert[e];
    if (count == 0) continue;
    outputs.push_back(experts[e]->as<SwiGLUImpl>()->forward(rows.narrow(0, offset, count), ctx));  // [count, C]
    offset += count;
  }

  // 4. Weight by gate and scatter-add back to tokens (EP combine goes before this).
  at::Tensor y = at::zeros({n, d}, x.options());  // [N, C]
  if (!outputs.empty()) {
    const at::Tensor expert_out = at::cat(outputs, 0);                                      // [R, C]
    const at::Tensor weighted = expert_out * plan.gate.to(x.scalar_type()).unsqueeze(1);  // [R, C]
    y = y.index_add(0, plan.token_index, weighted);
  }
  if (shared_experts) y = y + shared_experts->forward(x2, ctx);
  at::Tensor out = y.view({b, t, d});  // [B, T, C]

  if (aux_alpha_ > 0 && is_training()) {
    const at::Tensor aux = sequence_balance_loss(routing.scores.view({b, t, num_experts}),
                                                 routing.topk_idx.view({b, t, options_.top_k}), options_, aux_alpha_);
    out = attach_aux_loss(out, aux, ctx.loss_scale);
    ctx.aux_loss = ctx.aux_loss.defined() ? ctx.aux_loss + aux.detach() : aux.detach();
  }
  last_routing = {routing.scores.detach(), routing.topk_idx, routing.topk_weight.detach()};  // no graph kept
  return out;
}

}  // namespace tandem::model::detail
