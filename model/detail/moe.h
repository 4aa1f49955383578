// Internal MoE: router (affinities in at least fp32, bias for selection only, group-limited
// top-k, gate normalisation and scaling), sequence-wise balance loss, and the MoE layer that
// groups token->expert work per expert with whole-tensor gathers/scatters (docs/model.md#moe-layer).
// The layer runs in explicit phases: route -> permute rows by expert -> (expert parallel:
// all-to-all dispatch) -> experts -> (all-to-all combine) -> weight and scatter back.
// Under tensor parallelism each tp rank routes only its own tokens: its sequence slice under
// sequence parallelism, else an even share of the replicated token rows (the partial outputs are
// summed by the same all-reduce as the tensor-parallel shared experts). Routed experts are never
// split over tp; they are split over ep (expert e on ep rank e / (E / ep)).
// The exchanges are cut for an overlapping executor (DualPipe's F+BW pairs) through
// ForwardContext::overlap: [route, permute, count exchange, start_dispatch] -> hook (the other
// micro-batch's work) -> [wait, experts, start_combine] -> hook -> [wait, weight, scatter back];
// the backward transports call the same hook between start and wait (parallel/expert_dispatch.h).
// Without ep the hook is called at the same two places (exchange_point), forward and backward.
// With no hook, every exchange is simply start + wait.
#pragma once

#include <vector>

#include "model/detail/layers.h"

namespace tandem::model::detail {

struct RoutingOptions {
  int64_t num_experts = 0;
  int64_t top_k = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool sigmoid = true;  // else softmax over experts
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  // Benchmarks only (ModelConfig::force_balanced_routing): row n's k-th expert is (n*K + k) mod E.
  bool force_balanced = false;
};
RoutingOptions routing_options(const ModelConfig& config);

struct Routing {
  at::Tensor scores;       // [N, E] affinities s (sigmoid/softmax of the logits), >= fp32
  at::Tensor topk_idx;     // [N, K] int64 chosen experts
  at::Tensor topk_weight;  // [N, K] gate values g, differentiable through `scores`
};

// Experts chosen by selection score s + bias inside the topk_group best groups (a group's
// score is the sum of its two best selection scores; one when a group has a single expert).
// selection [N, E] -> [N, K] int64.
at::Tensor group_limited_topk(const at::Tensor& selection, const RoutingOptions& options);
// Gate values of the chosen experts from the unbiased scores: scores [N, E], topk_idx [N, K] ->
// [N, K], normalised when norm_topk_prob, times routed_scaling_factor (differentiable in scores).
at::Tensor gate_weights(const at::Tensor& scores, const at::Tensor& topk_idx, const RoutingOptions& options);
// logits [N, E] in the compute dtype; bias [E] (never differentiated).
Routing route(const at::Tensor& logits, const at::Tensor& bias, const RoutingOptions& options);
// Tokens per expert: topk_idx [..., K] -> [E] int64.
at::Tensor expert_counts(const at::Tensor& topk_idx, int64_t num_experts);
// alpha * mean over sequences of sum_i f_i P_i (docs/model.md#sequence-balance-loss).
// scores [B, T, E], topk_idx [B, T, K].
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& topk_idx, const RoutingOptions& options,
                                 double alpha);
// The same loss when each tp rank holds only some token rows of the sequences: scores [n, E],
// topk_idx [n, K], seq_id [n] (the sequence 0..num_seqs-1 of each row), seq_len the full length
// T. Per-sequence statistics are summed over `tp` (collective: two all-reduces, in forward only;
// the result is replicated over tp and its gradient reaches each rank's own rows).
at::Tensor sequence_balance_loss_sharded(const at::Tensor& scores, const at::Tensor& topk_idx, const at::Tensor& seq_id,
                                         int64_t num_seqs, int64_t seq_len, const RoutingOptions& options, double alpha,
                                         const parallel::CommunicatorPtr& tp);
// b_i += gamma * sign(mean(c) - c_i), in place on bias [E]; counts [E].
void update_routing_bias_(at::Tensor& bias, const at::Tensor& counts, double gamma);
// Returns `hidden` unchanged; in backward also feeds d(aux)=loss_scale, so a balance loss that
// is not part of the returned loss still trains the router.
at::Tensor attach_aux_loss(const at::Tensor& hidden, const at::Tensor& aux, double loss_scale);

// Token rows grouped by expert: row r of the permuted input is token token_index[r], weighted
// by gate[r] on the way back. Rows of one expert are contiguous, in token order.
struct DispatchPlan {
  at::Tensor token_index;                // [R] int64, R = N*K minus dropped rows
  at::Tensor gate;                       // [R] gate values (differentiable)
  std::vector<int64_t> rows_per_expert;  // [E], sums to R (empty unless host counts were asked)
  at::Tensor expert_offsets;             // [E] int32 on the routing device: end row of each expert
  int64_t dropped = 0;                   // rows over capacity (0 without a capacity factor)
};
// capacity <= 0: no dropping; else each expert keeps its first `capacity` rows in token order.
// `host_counts`: fill rows_per_expert (one device-to-host copy); a capacity needs them, so it
// implies them. Without, nothing here waits for the device.
DispatchPlan plan_dispatch(const Routing& routing, int64_t num_experts, int64_t capacity, bool host_counts = true);

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t dim, int64_t num_experts);
  at::Tensor weight;                   // [E, C]
  at::Tensor e_score_correction_bias;  // [E] buffer, float32
};
TORCH_MODULE(Router);

class MoEImpl : public torch::nn::Module {
 public:
  // Holds the routed experts of ep rank groups.ep_rank() (all of them when ep = 1) and the
  // shared experts split over tp.
  MoEImpl(const ModelConfig& config, int64_t layer, const ParallelGroups& groups = {});
  // [B, T, C] -> [B, T, C] replicated over ctx.tp, or [B, T/tp, C] -> [B, T/tp, C] under
  // sequence parallelism. Collective over ctx.tp and ctx.ep when those are larger than 1.
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);

  Router gate{nullptr};
  // This rank's routed experts, in global order (local index i is global expert
  // first_local_expert() + i). They are registered under "experts.{global index}".
  torch::nn::ModuleList experts{nullptr};
  SwiGLU shared_experts{nullptr};  // null when n_shared_experts = 0
  int64_t first_local_expert() const { return first_local_expert_; }

  // Tokens this rank routed per expert since reset (int64 [E], every global expert; counted
  // before capacity dropping). Global counts: parallel::all_reduce_expert_counts.
  at::Tensor load() const { return load_; }
  void reset_load() { load_.zero_(); }
  // Keeps the counters where routing runs, so counting never synchronises with the host.
  void move_load_to(const at::Device& device) { load_ = load_.to(device); }
  int64_t dropped_rows() const { return dropped_; }
  Routing last_routing;  // the routing of the latest forward (tests, diagnostics)

 private:
  // Routes `rows` [n, C] (this rank's tokens), runs the experts (through the all-to-alls when
  // ep > 1) and returns the gate-weighted routed output [n, C]. Records load and last_routing.
  at::Tensor routed(const at::Tensor& rows, ForwardContext& ctx, Routing& routing);
  // Runs local expert i on rows [offset, offset + counts[i]) of `rows`; [R, C] -> [R, C].
  at::Tensor run_experts(const at::Tensor& rows, const std::vector<int64_t>& counts, ForwardContext& ctx);
  // The same as grouped GEMMs (one per projection for all local experts), expert i's rows ending
  // at offsets[i] (int32 [local experts] on the rows' device); used on the GPU.
  at::Tensor run_experts_grouped(const at::Tensor& rows, const at::Tensor& offsets, ForwardContext& ctx);
  // Whether the experts run as grouped GEMMs for rows on this device (widths allowing).
  bool grouped_experts_for(const at::Tensor& rows) const;

  RoutingOptions options_;
  int64_t first_local_expert_ = 0;
  double aux_alpha_, capacity_factor_;
  at::Tensor load_;
  int64_t dropped_ = 0;
};
TORCH_MODULE(MoE);

}  // namespace tandem::model::detail
