// Internal attention modules: multi-head / grouped-query attention and multi-head latent
// attention (MODEL.md), both causal through scaled_dot_product_attention. Submodule names are
// the HF names under "self_attn.".
#pragma once

#include "model/detail/layers.h"

namespace tandem::model::detail {

class GqaAttentionImpl : public torch::nn::Module {
 public:
  explicit GqaAttentionImpl(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // [B, T, C] -> [B, T, C]
  SplitLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
  double scale_;
};
TORCH_MODULE(GqaAttention);

class MlaAttentionImpl : public torch::nn::Module {
 public:
  explicit MlaAttentionImpl(const ModelConfig& config);
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // [B, T, C] -> [B, T, C]
  // q_proj when q_lora_rank is null, else q_a_proj -> q_a_layernorm -> q_b_proj.
  SplitLinear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr};
  SplitLinear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};

 private:
  int64_t heads_, nope_dim_, rope_dim_, v_dim_, kv_rank_;
  double scale_;
};
TORCH_MODULE(MlaAttention);

}  // namespace tandem::model::detail
