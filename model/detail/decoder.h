// Internal decoder layer (pre-norm attention + dense MLP or MoE) and MTP module
// (docs/model.md#network-shape, #multi-token-prediction).
// Module names are the HF names below "model.layers.{i}.".
#pragma once

#include "model/detail/attention.h"
#include "model/detail/moe.h"

namespace tandem::model::detail {

class DecoderLayerImpl : public torch::nn::Module {
 public:
  // `layer` is the global index (N..N+D-1 for MTP blocks), deciding dense vs MoE. Modules hold
  // this rank's shards of `groups` (tp: heads and MLP widths; ep: routed experts).
  DecoderLayerImpl(const ModelConfig& config, int64_t layer, const ParallelGroups& groups = {});
  // [B, T, C] -> [B, T, C], or [B, T/tp, C] under sequence parallelism (ForwardContext).
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);

  // Registers this layer's children on `owner` under their HF names (MTP modules store the
  // block flat, next to enorm/hnorm/eh_proj).
  void register_children_on(torch::nn::Module& owner);

  int64_t layer_index() const { return layer_; }
  // input_layernorm then the attention's projections: the attention core's {q, k, v}.
  std::vector<at::Tensor> attention_inputs(const at::Tensor& x, ForwardContext& ctx);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  GqaAttention gqa{nullptr};
  MlaAttention mla{nullptr};
  SwiGLU mlp{nullptr};  // dense layers (tensor-parallel width intermediate_size / tp)
  MoE moe{nullptr};     // MoE layers

 private:
  int64_t layer_;
};
TORCH_MODULE(DecoderLayer);

// MTP depth k: h' = eh_proj([enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)]) -> decoder block ->
// h^k; the logits come from the shared head after shared_head.norm. The [embedding; hidden]
// column order of eh_proj is the one of DeepSeek's released MTP weights (enorm, hnorm).
// Under tensor parallelism the block is split like any decoder layer and always runs without
// sequence parallelism (its length T-k is generally not divisible by tp); enorm, hnorm, eh_proj
// and shared_head.norm are replicated.
class MtpModuleImpl : public torch::nn::Module {
 public:
  MtpModuleImpl(const ModelConfig& config, int64_t depth, const ParallelGroups& groups = {});
  // prev [B, T', C] (h^{k-1} truncated to the T' = T-k valid positions), emb [B, T', C] -> h^k.
  at::Tensor forward(const at::Tensor& prev, const at::Tensor& emb, ForwardContext& ctx);
  at::Tensor head_input(const at::Tensor& h) { return head_norm->forward(h); }  // shared_head.norm

  int64_t depth() const { return depth_; }
  RMSNorm enorm{nullptr}, hnorm{nullptr}, head_norm{nullptr};
  SplitLinear eh_proj{nullptr};
  DecoderLayer block{nullptr};

 private:
  int64_t depth_;
};
TORCH_MODULE(MtpModule);

}  // namespace tandem::model::detail
