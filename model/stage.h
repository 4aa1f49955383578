// Pipeline stages: the model cut by decoder-layer ranges. Stage 0 holds the token embedding;
// the last stage holds the final norm, the output head and the MTP modules (and, when it needs
// the embedding matrix for a tied head or for MTP lookups without being stage 0, a copy of it
// under the same name "model.embed_tokens.weight" that the executor keeps in sync with stage
// 0's). Every stage gets the micro-batch's token ids: stage 0 embeds them, the last stage takes
// labels and MTP inputs from them.
// Tensor/expert parallelism (ParallelGroups): a stage built over groups of size > 1 holds only
// this rank's shards (sharding.h), initialised by slicing the full tensors, so every layout starts
// from the same weights. The token ids are replicated over tp; under sequence parallelism the
// hidden states passed between stages are this rank's sequence slice [B, T/tp, C] (T % tp == 0);
// losses are replicated over tp. Every tp and ep rank must run the same calls (collectives).
// The last stage's losses come from its Objective (model/objective.h), next-token prediction
// unless set otherwise.
// Backward is driven from outside (an executor): run torch::autograd::backward on the outputs,
// or use Stage::backward, which also decides whether weight gradients are deferred (B/W split).
// The sequence-wise balance loss of a stage's MoE layers is injected into the backward of the
// hidden state it is computed from, scaled by StageInput::loss_scale, so a middle stage needs
// no extra output for it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/model_config.h"
#include "model/objective.h"
#include "model/parallel_groups.h"
#include "model/recompute.h"
#include "model/weight_grad_queue.h"
#include "parallel/layer_hooks.h"
#include "parallel/overlap_hook.h"
#include "parallel/param_sharding.h"

namespace tandem::model {

// Which part of the model one stage holds. Layers are [layer_begin, layer_end) of the N main
// decoder layers; a stage may hold none (a pass-through, e.g. DualPipeV with more stages than
// layers).
struct StageSpec {
  int64_t index = 0;
  int64_t num_stages = 1;
  int64_t layer_begin = 0;
  int64_t layer_end = 0;
  bool is_first() const { return index == 0; }              // embedding
  bool is_last() const { return index == num_stages - 1; }  // final norm, head, MTP
};

// Whether a stage holds "model.embed_tokens.weight": stage 0 (the lookup) and the last stage when
// it needs the matrix (a tied head, or the MTP modules' lookups). Every other parameter lives in
// exactly one stage, so these are the only parameters two different stages share.
bool stage_holds_embedding(const ModelConfig& config, const StageSpec& spec);

// Splits the N decoder layers into `num_stages` contiguous ranges, as even as possible, the
// earlier stages taking the remainder (launch/plan/memory_estimate.cpp uses the same rule).
std::vector<StageSpec> partition_layers(const ModelConfig& config, int64_t num_stages);
// Explicit sizes (sum must be N; entries may be 0). Throws config::KeyError otherwise.
std::vector<StageSpec> partition_layers(const ModelConfig& config, const std::vector<int64_t>& layers_per_stage);

// Stages held by each pipeline rank, in chunk order (chunk 0 first).
// DualPipe: P stages, rank r holds stage r (chunk 0, micro-batches flowing down) and P-1-r
// (chunk 1, flowing up); every stage is held by two ranks. DualPipeV: 2P stages, rank r holds
// r and 2P-1-r (the V fold). Linear (GPipe/1F1B/ZB): P stages, rank r holds r. Interleaved with
// v chunks: v*P stages, chunk c of rank r is stage c*P + r.
std::vector<std::vector<int64_t>> linear_stage_assignment(int64_t pp);
std::vector<std::vector<int64_t>> interleaved_stage_assignment(int64_t pp, int64_t virtual_stages);
std::vector<std::vector<int64_t>> dualpipe_stage_assignment(int64_t pp);
std::vector<std::vector<int64_t>> dualpipev_stage_assignment(int64_t pp);

// Several samples packed into each row (post-training): which sample each input token belongs to
// and its position inside that sample, both [B, T] int64 (segment 0: padding). Attention stays
// inside a sample (block-diagonal causal) and rotary positions restart with each sample, so a
// sample gets the logits it would get alone. Undefined: one sequence per row, from position 0.
struct PackedRows {
  at::Tensor segment_ids;
  at::Tensor positions;
  bool defined() const { return segment_ids.defined(); }
};

// [B, 1, T, T] bool, true where query i may attend key j: same segment and j <= i (a padding
// position sees the padding before it, so no row of the mask is empty).
at::Tensor packed_causal_mask(const at::Tensor& segment_ids);

struct StageInput {
  at::Tensor tokens;  // [B, T+1] int64: inputs are tokens[:, :T], next-token labels tokens[:, 1:]
  at::Tensor hidden;  // [B, T, C] ([B, T/tp, C] under sequence parallelism) from the previous
                      // stage; undefined on stage 0. Make it a leaf that requires grad to
                      // receive its gradient.
  // Factor the caller will apply to this micro-batch's loss gradient (e.g. 1 / micro-batches);
  // the balance loss injected inside the stage is scaled by it too.
  double loss_scale = 1.0;
  PackedRows packing;  // every stage of a forward gets the same (undefined: unpacked rows)
  // Post-training: the responses the last stage's objective scores (model/policy_objectives.h).
  std::shared_ptr<const ResponseTokens> responses;
};

struct StageOutput {
  at::Tensor hidden;    // [B, T(/tp), C] for the next stage; undefined on the last stage
  LossPieces losses;    // last stage only, from the stage's objective
  at::Tensor aux_loss;  // [] this stage's balance loss (detached, for logging), every stage
};

// Mean over MoE layers of (max / mean) tokens per expert, from counts in Stage::expert_load()'s
// layout (rows of layers without routed tokens are skipped): 1.0 is perfectly balanced, E/K
// when every token goes to the same K experts.
double load_imbalance(const at::Tensor& counts);

class Stage {
 public:
  struct Impl;
  // Builds the stage's own modules (parameters initialized from (seed, name, full shape)), as a
  // pipeline rank does. Throws config errors for an invalid config or unsupported groups.
  static std::shared_ptr<Stage> build(const ModelConfig& config, uint64_t seed, const ParallelGroups& groups,
                                      const StageSpec& spec);
  explicit Stage(std::unique_ptr<Impl> impl);
  ~Stage();
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  const StageSpec& spec() const;
  const ModelConfig& config() const;

  StageOutput forward(const StageInput& input);
  // Shape of the hidden state passed between stages for these tokens [B, T+1]:
  // {B, T(/tp under sequence parallelism), hidden_size}. What a pipeline receive allocates.
  std::vector<int64_t> hidden_shape(const at::Tensor& tokens) const;

  // torch::autograd::backward(outputs, grad_outputs) with weight gradients deferred into this
  // stage's queue when `defer_weight_grads` (B now, W later), or computed now (full backward).
  // One call is one queue group. On the last stage pass {losses.loss} and {} (or a scale).
  void backward(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& grad_outputs,
                bool defer_weight_grads);
  // The queue this stage's split layers push to. Stages that share a rank's W FIFO (DualPipe)
  // can be given one queue; set it before the first forward.
  const std::shared_ptr<WeightGradQueue>& weight_grad_queue() const;
  void set_weight_grad_queue(std::shared_ptr<WeightGradQueue> queue);
  // The hook the MoE layers call while their exchanges are in flight, forward and backward
  // (parallel/overlap_hook.h); captured by each forward, so set it before the forwards it should
  // apply to. Null (the default) runs every exchange as start + wait.
  void set_overlap_hook(parallel::OverlapHookPtr hook);
  // What the last stage's head computes its losses with (model/objective.h); the default is
  // next-token prediction. Set before the forwards it should apply to; not null.
  void set_objective(std::shared_ptr<const Objective> objective);
  // Which activations the stage's layers recompute in backward instead of keeping
  // (model/recompute.h); none by default. Set before the forwards it should apply to.
  void set_recompute(const RecomputePolicy& policy);

  // Callbacks around each decoder layer's (and MTP module's) use of its parameters in forward
  // and backward (contract in parallel/layer_hooks.h); ZeRO-3 gathers and releases parameters
  // from them (parallel::DataParallelOptimizer::layer_hooks). Null removes them. Set before the
  // forward whose backward should see them; stages from make_stages need their own call.
  void set_layer_hooks(std::shared_ptr<parallel::LayerHooks> hooks);

  // HF names ("model.layers.3.mlp.experts.5.up_proj.weight"), this stage's parameters only:
  // the LOCAL tensors (shards under tp, this rank's experts under ep) under their global names.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  // The same parameters, same order, with how each relates to the global tensor and which group
  // its gradient must be reduced over (parallel/param_sharding.h).
  std::vector<parallel::ShardedParam> sharded_parameters() const;
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const;  // routing biases

  // Tokens this rank routed to each expert since the last reset, rows indexed by global layer (N
  // main layers then D MTP blocks), zero rows for dense layers and layers of other stages. Under
  // tp/dp each rank counts its own tokens: sum over the stage's dp*tp ranks for the global counts
  // (parallel::all_reduce_expert_counts).
  at::Tensor expert_load() const;  // [N + D, n_routed_experts] int64
  void reset_expert_load();
  // b_i += gamma * sign(mean_i(c) - c_i) for each MoE layer of this stage, from globally
  // reduced counts in expert_load()'s layout; gamma defaults to config.bias_update_speed.
  void update_routing_bias(const at::Tensor& counts, double gamma = -1.0);

  void train(bool on);  // eval: no balance loss, no load counting (MTP still runs in forward)
  // Parameters to `dtype`; routing biases stay in at least fp32.
  void to(at::ScalarType dtype);
  // Parameters, routing biases and load counters to `device` (before building optimizer buffers:
  // the tensors are replaced, so flat parameter groups made earlier would be left behind).
  void to(const at::Device& device);

  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::model
