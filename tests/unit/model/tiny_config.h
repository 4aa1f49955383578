// The small MoE + MLA + MTP configuration most model tests run (fast on 2 CPU cores).
#pragma once

#include "model/model_config.h"

namespace tandem::model::testing {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.num_hidden_layers = 4;
  c.intermediate_size = 48;
  c.moe_intermediate_size = 16;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.attention_type = AttentionType::kMla;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 8;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 2;
  c.topk_group = 1;
  c.routed_scaling_factor = 2.5;
  c.first_k_dense_replace = 1;
  c.num_nextn_predict_layers = 1;
  c.mtp_loss_weight = 0.3;
  c.aux_loss_alpha = 0.01;
  c.initializer_range = 0.1;  // larger than V3's 0.006 so the tiny model's logits are not flat
  c.validate();
  return c;
}

}  // namespace tandem::model::testing
