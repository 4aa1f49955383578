// Internal MoE: router (affinities in at least fp32, bias for selection only, group-limited
// top-k, gate normalisation and scaling), sequence-wise balance loss, and the MoE layer that
// groups token->expert work per expert with whole-tensor gathers/scatters (MODEL.md).
// The layer runs in explicit phases so expert parallelism can later insert its all-to-all
// between them: route -> permute rows by expert (dispatch) -> experts -> weight and scatter
// back (combine).
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
// logits [N, E] in the compute dtype; bias [E] (never differentiated).
Routing route(const at::Tensor& logits, const at::Tensor& bias, const RoutingOptions& options);
// Tokens per expert: topk_idx [..., K] -> [E] int64.
at::Tensor expert_counts(const at::Tensor& topk_idx, int64_t num_experts);
// alpha * mean over sequences of sum_i f_i P_i (MODEL.md). scores [B, T, E], topk_idx [B, T, K].
at::Tensor sequence_balance_loss(const at::Tensor& scores, const at::Tensor& topk_idx, const RoutingOptions& options,
                                 double alpha);
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
  std::vector<int64_t> rows_per_expert;  // [E], sums to R
  int64_t dropped = 0;                   // rows over capacity (0 without a capacity factor)
};
// capacity <= 0: no dropping; else each expert keeps its first `capacity` rows in token order.
DispatchPlan plan_dispatch(const Routing& routing, int64_t num_experts, int64_t capacity);

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t dim, int64_t num_experts);
  at::Tensor weight;                   // [E, C]
  at::Tensor e_score_correction_bias;  // [E] buffer, float32
};
TORCH_MODULE(Router);

class MoEImpl : public torch::nn::Module {
 public:
  MoEImpl(const ModelConfig& config, int64_t layer);
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // [B, T, C] -> [B, T, C]

  Router gate{nullptr};
  torch::nn::ModuleList experts{nullptr};
  SwiGLU shared_experts{nullptr};  // null when n_shared_experts = 0

  // Tokens routed per expert since reset (int64 [E]; counted before capacity dropping).
  at::Tensor load() const { return load_; }
  void reset_load() { load_.zero_(); }
  int64_t dropped_rows() const { return dropped_; }
  Routing last_routing;  // the routing of the latest forward (tests, diagnostics)

 private:
  RoutingOptions options_;
  double aux_alpha_, capacity_factor_;
  at::Tensor load_;
  int64_t dropped_ = 0;
};
TORCH_MODULE(MoE);

}  // namespace tandem::model::detail
