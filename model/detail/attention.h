// Internal attention modules: multi-head / grouped-query attention and multi-head latent
// attention (docs/model.md#attention), both causal through scaled_dot_product_attention. Submodule names are
// the HF names under "self_attn.".
// Tensor parallelism splits the heads: each tp rank holds H/tp query heads (and, for GQA,
// KV/tp key/value heads) as column-parallel projections and the matching columns of o_proj
// (row-parallel). MLA's low-rank down-projections (q_a_proj, kv_a_proj_with_mqa) and their norms
// are replicated; their outputs enter the tensor-parallel region (under sequence parallelism they
// run on this rank's sequence slice and their outputs are all-gathered, so their weight
// gradients are partial over tp).
#pragma once

#include "model/detail/layers.h"

namespace tandem::model::detail {

class GqaAttentionImpl : public torch::nn::Module {
 public:
  GqaAttentionImpl(const ModelConfig& config, const ParallelGroups& groups = {});
  // [B, T, C] -> [B, T, C] (replicated over tp), or [B, T/tp, C] -> [B, T/tp, C] (sequence parallel).
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);
  SplitLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;  // heads_ and kv_heads_ local to this tp rank
  double scale_;
};
TORCH_MODULE(GqaAttention);

class MlaAttentionImpl : public torch::nn::Module {
 public:
  MlaAttentionImpl(const ModelConfig& config, const ParallelGroups& groups = {});
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // as GqaAttentionImpl::forward
  // q_proj when q_lora_rank is null, else q_a_proj -> q_a_layernorm -> q_b_proj.
  SplitLinear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr};
  SplitLinear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};

 private:
  int64_t heads_, nope_dim_, rope_dim_, v_dim_, kv_rank_;  // heads_ local to this tp rank
  double scale_;
};
TORCH_MODULE(MlaAttention);

}  // namespace tandem::model::detail
