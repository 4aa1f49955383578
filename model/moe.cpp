// The MoE layer: shared experts plus routed experts, token work grouped per expert. Forward
// phases (moe.h): route in >= fp32 -> count load -> permute token rows into expert order ->
// (ep > 1: all-to-all to the experts' ranks) -> one SwiGLU call per local expert on its contiguous
// block (on a GPU: grouped GEMMs over all local experts at once) -> (ep > 1: all-to-all back) ->
// weight by gate and scatter-add back to the tokens (on a GPU: fused kernels, model/kernels/).
// Tensor parallelism: each tp rank routes its own rows (sequence slice under sequence
// parallelism, else an even share of the replicated rows), so no token is routed or dispatched
// twice; the routed partial outputs join the shared experts' row-parallel partial sums.
#include <cmath>

#include "model/autocast.h"
#include "model/detail/fused_dense.h"
#include "model/detail/fused_moe.h"
#include "model/detail/moe.h"
#include "parallel/expert_dispatch.h"
#include "parallel/tp_mappings.h"
#include "runtime/error.h"

namespace tandem::model::detail {

RouterImpl::RouterImpl(int64_t dim, int64_t num_experts) {
  weight = register_parameter("weight", torch::empty({num_experts, dim}));
  e_score_correction_bias = register_buffer("e_score_correction_bias", torch::zeros({num_experts}));
}

MoEImpl::MoEImpl(const ModelConfig& c, int64_t layer, const ParallelGroups& groups)
    : options_(routing_options(c)), aux_alpha_(c.aux_loss_alpha), capacity_factor_(c.capacity_factor) {
  const int64_t ep = groups.ep_size();
  const int64_t tp = groups.tp_size();
  TANDEM_CHECK_CONFIG(c.n_routed_experts % ep == 0, "n_routed_experts = {} is not divisible by ep = {}",
                      c.n_routed_experts, ep);
  const int64_t shared_width = c.n_shared_experts * c.moe_intermediate_size;
  TANDEM_CHECK_CONFIG(shared_width % tp == 0,
                      "the shared experts' width n_shared_experts * moe_intermediate_size = {} is not divisible by "
                      "tp = {}",
                      shared_width, tp);
  gate = register_module("gate", Router(c.hidden_size, c.n_routed_experts));
  // Routed experts under their global index; `experts` lists the same modules by local index.
  auto holder = register_module("experts", std::make_shared<torch::nn::Module>("Experts"));
  experts = torch::nn::ModuleList();
  const int64_t local = c.n_routed_experts / ep;
  first_local_expert_ = groups.ep_rank() * local;
  for (int64_t i = 0; i < local; ++i) {
    SwiGLU expert(c.hidden_size, c.moe_intermediate_size);
    holder->register_module(std::to_string(first_local_expert_ + i), expert);
    experts->push_back(expert);
  }
  if (c.n_shared_experts > 0) {
    shared_experts = register_module("shared_experts", SwiGLU(c.hidden_size, shared_width / tp));
  }
  load_ = torch::zeros({c.n_routed_experts}, torch::kLong);
}

at::Tensor MoEImpl::run_experts(const at::Tensor& rows, const std::vector<int64_t>& counts, ForwardContext& ctx) {
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0) continue;
    outputs.push_back(experts[i]->as<SwiGLUImpl>()->forward(rows.narrow(0, offset, counts[i]), ctx));  // [count, C]
    offset += counts[i];
  }
  // No rows at all: hand the (empty) input on, so the graph still reaches the dispatch.
  return outputs.empty() ? rows : at::cat(outputs, 0);  // [R, C]
}

bool MoEImpl::grouped_experts_for(const at::Tensor& rows) const {
  const at::ScalarType dtype = rows.scalar_type();  // at::_grouped_mm takes no float64
  const bool float_rows = dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
  if (!rows.is_cuda() || !float_rows || experts->size() == 0) return false;
  const at::Tensor& first = experts->ptr(0)->as<SwiGLUImpl>()->gate_proj->weight;  // [I, C]
  return grouped_linear_supported(first.size(1), first.size(0));
}

at::Tensor MoEImpl::run_experts_grouped(const at::Tensor& rows, const at::Tensor& offsets, ForwardContext& ctx) {
  // No rows: as run_experts, hand the empty input on (a grouped GEMM of nothing is not needed).
  if (rows.size(0) == 0) return rows;
  std::vector<at::Tensor> gate_w, up_w, down_w;  // one [out, in] leaf per local expert
  for (const auto& module : *experts) {
    const auto* expert = module->as<SwiGLUImpl>();
    gate_w.push_back(expert->gate_proj->weight);
    up_w.push_back(expert->up_proj->weight);
    down_w.push_back(expert->down_proj->weight);
  }
  const at::Tensor gate_out = grouped_split_linear(rows, gate_w, offsets, ctx.queue);                     // [R, I]
  const at::Tensor up_out = grouped_split_linear(rows, up_w, offsets, ctx.queue);                         // [R, I]
  return grouped_split_linear(swiglu_gate_differentiable(gate_out, up_out), down_w, offsets, ctx.queue);  // [R, C]
}

at::Tensor MoEImpl::routed(const at::Tensor& rows, ForwardContext& ctx, Routing& routing) {
  const int64_t n = rows.size(0);
  const int64_t num_experts = options_.num_experts;

  // 1. Route, in at least fp32 (docs/model.md#moe-routing), autocast or not: the logits pick the experts.
  const at::ScalarType compute = at::promote_types(rows.scalar_type(), at::kFloat);
  at::Tensor logits;  // [n, E]
  {
    const AutocastOffScope fp32_router(rows.device().type());
    logits = split_linear(rows.to(compute), gate->weight.to(compute), ctx.queue);
  }
  routing = route(logits, gate->e_score_correction_bias, options_);
  if (is_training() && !ctx.recomputing) {
    torch::NoGradGuard no_grad;
    load_ += expert_counts(routing.topk_idx, num_experts).to(load_.device());
  }

  // 2. Permute token rows into expert order. Capacity counts this rank's rows only, and only in
  // training: inference drops no token (as DeepSeek-V3), so a token's output never depends on
  // which other tokens share its forward (decoding one token at a time equals the full pass).
  const int64_t capacity = capacity_factor_ > 0 && is_training()
                               ? static_cast<int64_t>(std::ceil(capacity_factor_ * n * options_.top_k / num_experts))
                               : 0;
  const bool grouped = grouped_experts_for(rows);
  const bool ep_exchange = ctx.ep && ctx.ep->size() > 1;
  // The grouped GEMMs take the expert boundaries on the device: no host copy of the counts
  // unless the all-to-all needs them.
  const DispatchPlan plan = plan_dispatch(routing, num_experts, capacity, /*host_counts=*/!grouped || ep_exchange);
  if (!ctx.recomputing) dropped_ += plan.dropped;
  // On a GPU the row movement is one kernel each way (model/kernels/); the CPU keeps LibTorch's.
  const bool fused = rows.is_cuda();
  const at::Tensor permuted = fused ? permute_tokens_differentiable(rows, plan.token_index)
                                    : rows.index_select(0, plan.token_index);  // [R, C]

  // 3. Experts, through the all-to-alls when they live on other ranks.
  at::Tensor expert_out;  // [R, C] in `permuted` order
  // Both exchanges yield to ctx.overlap while in flight (at the same places without ep).
  if (ep_exchange) {
    const auto layout = parallel::exchange_counts(plan.rows_per_expert, ctx.ep, rows.device());
    parallel::DispatchHandle dispatch = parallel::start_dispatch(permuted, layout, ctx.ep, ctx.overlap);
    parallel::yield_to_overlap(ctx.overlap);
    const at::Tensor received = dispatch.wait();  // [R_recv, C] by local expert
    at::Tensor local_out;                         // [R_recv, C]
    if (grouped) {
      const std::vector<int64_t>& counts = layout->rows_per_local_expert;
      std::vector<int32_t> ends(counts.size());
      int64_t end = 0;
      for (size_t i = 0; i < counts.size(); ++i) ends[i] = static_cast<int32_t>(end += counts[i]);
      const at::Tensor offsets = at::tensor(ends, at::TensorOptions().dtype(at::kInt)).to(rows.device());
      local_out = run_experts_grouped(received, offsets, ctx);
    } else {
      local_out = run_experts(received, layout->rows_per_local_expert, ctx);
    }
    parallel::CombineHandle combine = parallel::start_combine(local_out, layout, ctx.ep, ctx.overlap);
    parallel::yield_to_overlap(ctx.overlap);
    expert_out = combine.wait();
  } else {
    const at::Tensor local = parallel::exchange_point(permuted, ctx.overlap);  // [R, C]
    expert_out = parallel::exchange_point(grouped ? run_experts_grouped(local, plan.expert_offsets, ctx)
                                                  : run_experts(local, plan.rows_per_expert, ctx),
                                          ctx.overlap);
  }

  // 4. Weight by gate and scatter-add back to this rank's rows.
  if (fused) {
    return unpermute_combine_differentiable(expert_out, plan.gate, plan.token_index, n, rows.scalar_type());  // [n, C]
  }
  const at::Tensor weighted = expert_out * plan.gate.to(rows.scalar_type()).unsqueeze(1);        // [R, C]
  return at::zeros({n, rows.size(1)}, rows.options()).index_add(0, plan.token_index, weighted);  // [n, C]
}

at::Tensor MoEImpl::forward(const at::Tensor& x, ForwardContext& ctx) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  const int64_t num_experts = options_.num_experts;
  const int64_t tp = ctx.tp_size();
  Routing routing;
  at::Tensor out;       // [B, T(/tp), C]
  at::Tensor seq_id;    // [n] sequence of each routed row (tp > 1)
  int64_t seq_len = t;  // full sequence length
  if (tp == 1) {
    const at::Tensor x2 = x.reshape({b * t, d});  // [N, C]
    at::Tensor y = routed(x2, ctx, routing);
    if (shared_experts) y = y + shared_experts->forward(x2, ctx);
    out = y.view({b, t, d});
  } else if (ctx.sequence_parallel) {
    // Each rank routes its sequence slice; the shared experts gather the sequence.
    const at::Tensor rows = x.reshape({b * t, d});  // [B*T/tp, C]
    out = routed(rows, ctx, routing).view({b, t, d});
    if (shared_experts) out = out + shared_experts->forward_parallel(x, ctx);
    seq_len = t * tp;
    seq_id = at::floor_divide(at::arange(b * t, x.options().dtype(at::kLong)), t);
  } else {
    // Replicated tokens: rank r routes rows [begin, begin + count) of the N rows; its routed
    // output, zero elsewhere, joins the shared experts' partial sum before the one all-reduce.
    const int64_t n = b * t;
    const at::Tensor x_in = parallel::copy_to_tp(x, ctx.tp).reshape({n, d});  // [N, C]
    const parallel::RowRange range = parallel::even_row_range(n, tp, ctx.tp->rank());
    const at::Tensor y = routed(x_in.narrow(0, range.begin, range.count), ctx, routing);              // [count, C]
    at::Tensor partial = at::constant_pad_nd(y, {0, 0, range.begin, n - range.begin - range.count});  // [N, C]
    if (shared_experts) partial = partial + shared_experts->forward(x_in, ctx);
    out = parallel::reduce_from_tp(partial, ctx.tp).view({b, t, d});
    seq_id = at::floor_divide(at::arange(range.begin, range.begin + range.count, x.options().dtype(at::kLong)), t);
  }

  if (aux_alpha_ > 0 && is_training()) {
    const at::Tensor aux = tp == 1 ? sequence_balance_loss(routing.scores.view({b, t, num_experts}),
                                                           routing.topk_idx.view({b, t, options_.top_k}), options_,
                                                           aux_alpha_)
                                   : sequence_balance_loss_sharded(routing.scores, routing.topk_idx, seq_id, b, seq_len,
                                                                   options_, aux_alpha_, ctx.tp);
    out = attach_aux_loss(out, aux, ctx.loss_scale);
    if (!ctx.recomputing) ctx.aux_loss = ctx.aux_loss.defined() ? ctx.aux_loss + aux.detach() : aux.detach();
  }
  if (!ctx.recomputing) last_routing = {routing.scores.detach(), routing.topk_idx, routing.topk_weight.detach()};
  return out;
}

}  // namespace tandem::model::detail
