// Router math of the MoE layer (docs/model.md#moe-routing, steps 1-4), the sequence-wise balance loss and the
// auxiliary-loss-free bias update. Everything is whole-tensor ([N, E] scores, [N, K] choices);
// selection uses scores + bias, gate values use the scores alone.
#include <limits>

#include "model/detail/fused_moe.h"
#include "model/detail/moe.h"
#include "parallel/tp_mappings.h"
#include "runtime/error.h"

namespace tandem::model::detail {

RoutingOptions routing_options(const ModelConfig& c) {
  RoutingOptions o;
  o.num_experts = c.n_routed_experts;
  o.top_k = c.num_experts_per_tok;
  o.n_group = c.n_group;
  o.topk_group = c.topk_group;
  o.sigmoid = c.scoring_func == ScoringFunc::kSigmoid;
  o.norm_topk_prob = c.norm_topk_prob;
  o.routed_scaling_factor = c.routed_scaling_factor;
  o.force_balanced = c.force_balanced_routing;
  return o;
}

at::Tensor group_limited_topk(const at::Tensor& selection, const RoutingOptions& o) {
  const int64_t n = selection.size(0);
  const int64_t e = selection.size(1);
  TANDEM_CHECK(e == o.num_experts && e % o.n_group == 0, "selection [{}, {}] vs {} experts in {} groups", n, e,
               o.num_experts, o.n_group);
  at::Tensor candidates = selection;  // [N, E]
  if (o.topk_group < o.n_group) {
    const int64_t per_group = e / o.n_group;
    const at::Tensor grouped = selection.view({n, o.n_group, per_group});  // [N, G, E/G]
    const at::Tensor group_score = std::get<0>(grouped.topk(std::min<int64_t>(2, per_group), -1)).sum(-1);  // [N, G]
    const at::Tensor kept_groups = std::get<1>(group_score.topk(o.topk_group, -1));  // [N, topk_group]
    const at::Tensor kept = at::zeros({n, o.n_group}, selection.options().dtype(at::kBool))
                                .scatter_(1, kept_groups, true)
                                .unsqueeze(-1)
                                .expand({n, o.n_group, per_group})
                                .reshape({n, e});  // [N, E]
    // -inf, not 0: with the bias a selection score can be negative.
    candidates = selection.masked_fill(kept.logical_not(), -std::numeric_limits<double>::infinity());
  }
  return std::get<1>(candidates.topk(o.top_k, -1));  // [N, K]
}

Routing route(const at::Tensor& logits, const at::Tensor& bias, const RoutingOptions& o) {
  Routing r;
  r.scores = o.sigmoid ? at::sigmoid(logits) : at::softmax(logits, -1);  // [N, E]
  if (o.force_balanced) {
    // The same rule as torchtitan's moe_force_load_balance, so that speed comparisons route
    // identically: rows numbered batch-major, each expert receiving N*K/E rows.
    const int64_t n = r.scores.size(0);
    r.topk_idx = at::remainder(at::arange(n * o.top_k, r.scores.options().dtype(at::kLong)), o.num_experts)
                     .view({n, o.top_k});  // [N, K]
  } else if (r.scores.is_cuda()) {
    // One fused kernel for the selection (fp32 sigmoid scores; otherwise the same math below).
    r.topk_idx = routing_topk(r.scores, bias, o).first;  // [N, K]
  } else {
    const at::Tensor selection = r.scores.detach() + bias.to(r.scores.scalar_type());
    r.topk_idx = group_limited_topk(selection, o);  // [N, K]
  }
  r.topk_weight = gate_weights(r.scores, r.topk_idx, o);
  return r;
}

at::Tensor gate_weights(const at::Tensor& scores, const at::Tensor& topk_idx, const RoutingOptions& o) {
  at::Tensor gates = scores.gather(1, topk_idx);  // [N, K]
  if (o.norm_topk_prob) gates = gates / (gates.sum(-1, true) + 1e-20);
  return gates * o.routed_scaling_factor;
}

at::Tensor expert_counts(const at::Tensor& topk_idx, int64_t num_experts) {
  // A scatter-add, not bincount: bincount reads the largest index on the host (a GPU sync).
  const at::Tensor flat = topk_idx.reshape({-1});  // [N*K]
  return at::zeros({num_experts}, flat.options().dtype(at::kLong))
      .scatter_add_(0, flat, at::ones_like(flat, flat.options().dtype(at::kLong)));  // [E]
}

at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& topk_idx, const RoutingOptions& o,
                                 double alpha) {
  const int64_t b = scores.size(0), t = scores.size(1), e = scores.size(2);
  const at::Tensor normalized = scores / scores.sum(-1, true);  // [B, T, E] s_i,t / sum_j s_j,t
  const at::Tensor p = normalized.mean(1);                      // [B, E] P_i
  const at::Tensor chosen =
      at::zeros({b, e}, scores.options())
          .scatter_add_(1, topk_idx.reshape({b, -1}), at::ones({b, t * o.top_k}, scores.options()));  // [B, E] counts
  const at::Tensor f = chosen * (static_cast<double>(e) / static_cast<double>(o.top_k * t));          // [B, E] f_i
  return (f * p).sum(-1).mean() * alpha;
}

at::Tensor sequence_balance_loss_sharded(const at::Tensor& scores, const at::Tensor& topk_idx, const at::Tensor& seq_id,
                                         int64_t num_seqs, int64_t seq_len, const RoutingOptions& o, double alpha,
                                         const parallel::CommunicatorPtr& tp) {
  const int64_t e = scores.size(1);
  const at::Tensor normalized = scores / scores.sum(-1, true);  // [n, E]
  const at::Tensor p_part = at::zeros({num_seqs, e}, scores.options()).index_add(0, seq_id, normalized) /
                            static_cast<double>(seq_len);
  const at::Tensor p = parallel::reduce_from_tp(p_part, tp);                    // [B, E] P_i
  const at::Tensor slots = (seq_id.unsqueeze(1) * e + topk_idx).reshape({-1});  // [n*K] flat (sequence, expert)
  at::Tensor chosen = at::zeros({num_seqs * e}, scores.options().requires_grad(false))
                          .index_add_(0, slots, at::ones({slots.numel()}, scores.options().requires_grad(false)));
  if (tp && tp->size() > 1) tp->all_reduce(chosen, parallel::ReduceOp::kSum);
  const at::Tensor f = chosen.view({num_seqs, e}) * (static_cast<double>(e) / static_cast<double>(o.top_k * seq_len));
  return (f * p).sum(-1).mean() * alpha;
}

void update_routing_bias_(at::Tensor& bias, const at::Tensor& counts, double gamma) {
  TANDEM_CHECK(counts.numel() == bias.numel(), "{} counts for {} experts", counts.numel(), bias.numel());
  torch::NoGradGuard no_grad;
  const at::Tensor c = counts.to(at::kDouble).reshape(bias.sizes()).to(bias.device());
  bias.add_((at::sign(c.mean() - c) * gamma).to(bias.scalar_type()));
}

namespace {

struct AttachAuxLoss : torch::autograd::Function<AttachAuxLoss> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& aux,
                            double loss_scale) {
    ctx->saved_data["scale"] = loss_scale;
    ctx->saved_data["aux_dtype"] = static_cast<int64_t>(aux.scalar_type());
    return hidden;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["aux_dtype"].toInt());
    const at::Tensor grad_aux = at::full({}, ctx->saved_data["scale"].toDouble(), grads[0].options().dtype(dtype));
    return {grads[0], grad_aux, at::Tensor()};
  }
};

}  // namespace

at::Tensor attach_aux_loss(const at::Tensor& hidden, const at::Tensor& aux, double loss_scale) {
  return AttachAuxLoss::apply(hidden, aux, loss_scale);
}

DispatchPlan plan_dispatch(const Routing& routing, int64_t num_experts, int64_t capacity, bool host_counts) {
  const int64_t k = routing.topk_idx.size(1);
  const at::Tensor flat_expert = routing.topk_idx.reshape({-1});                 // [N*K]
  const at::Tensor order = at::argsort(flat_expert, /*stable=*/true, 0, false);  // rows grouped by expert
  DispatchPlan plan;
  plan.token_index = at::floor_divide(order, k);                                  // [N*K]
  plan.gate = routing.topk_weight.reshape({-1}).index_select(0, order);           // [N*K]
  const at::Tensor device_counts = expert_counts(routing.topk_idx, num_experts);  // [E]
  plan.expert_offsets = at::cumsum(device_counts, 0).to(at::kInt);                // [E]
  if (!host_counts && capacity <= 0) return plan;
  const at::Tensor counts = device_counts.cpu();  // [E]
  const int64_t* c = counts.data_ptr<int64_t>();
  plan.rows_per_expert.assign(c, c + num_experts);
  if (capacity > 0) {
    // Rank of each row inside its expert's block; keep the first `capacity` of every block.
    const at::Tensor sorted_expert = flat_expert.index_select(0, order);  // [N*K]
    const at::Tensor block_start = at::cumsum(counts, 0) - counts;        // [E]
    const at::Tensor rank = at::arange(order.numel(), order.options()) -
                            block_start.to(order.device()).index_select(0, sorted_expert);
    const at::Tensor keep = rank < capacity;
    plan.token_index = plan.token_index.index({keep});
    plan.gate = plan.gate.index({keep});
    for (int64_t& rows : plan.rows_per_expert) {
      plan.dropped += std::max<int64_t>(rows - capacity, 0);
      rows = std::min(rows, capacity);
    }
    const at::Tensor kept_counts = at::tensor(plan.rows_per_expert, at::TensorOptions().dtype(at::kLong));  // [E]
    plan.expert_offsets = at::cumsum(kept_counts, 0).to(order.device(), at::kInt);
  }
  return plan;
}

}  // namespace tandem::model::detail
