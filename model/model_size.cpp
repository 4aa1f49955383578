// Parameter and FLOP counting (see model_size.h). Each helper mirrors one module's parameter
// list; the comments name the HF parameter each term stands for.
#include "model/model_size.h"

#include "runtime/error.h"

namespace tandem::model {
namespace {

int64_t num_layers_with_mtp(const ModelConfig& c) { return c.num_hidden_layers + c.num_nextn_predict_layers; }

// Attention weights without norms (matmul part only).
int64_t attention_matmul_params(const ModelConfig& c) {
  const int64_t d = c.hidden_size;
  const int64_t h = c.num_attention_heads;
  if (c.uses_gqa()) {
    const int64_t hd = c.gqa_head_dim();
    return d * h * hd                            // q_proj
           + 2 * d * c.num_key_value_heads * hd  // k_proj, v_proj
           + h * hd * d;                         // o_proj
  }
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  int64_t n = 0;
  if (c.q_lora_rank) {
    n += d * *c.q_lora_rank + *c.q_lora_rank * h * qk;  // q_a_proj, q_b_proj
  } else {
    n += d * h * qk;  // q_proj
  }
  n += d * (c.kv_lora_rank + c.qk_rope_head_dim);                 // kv_a_proj_with_mqa
  n += c.kv_lora_rank * h * (c.qk_nope_head_dim + c.v_head_dim);  // kv_b_proj
  n += h * c.v_head_dim * d;                                      // o_proj
  return n;
}

int64_t attention_norm_params(const ModelConfig& c) {
  if (c.uses_gqa()) return 0;
  return (c.q_lora_rank ? *c.q_lora_rank : 0) + c.kv_lora_rank;  // q_a_layernorm, kv_a_layernorm
}

int64_t swiglu_params(int64_t d, int64_t width) { return 3 * d * width; }  // gate, up, down

int64_t router_params(const ModelConfig& c) { return c.n_routed_experts * c.hidden_size; }  // gate.weight

int64_t shared_expert_params(const ModelConfig& c) {
  return c.n_shared_experts > 0 ? swiglu_params(c.hidden_size, c.n_shared_experts * c.moe_intermediate_size) : 0;
}

// Matmul parameters of the feed-forward part of `layer` a token uses.
int64_t ffn_activated_params(const ModelConfig& c, int64_t layer) {
  if (!c.is_moe_layer(layer)) return dense_mlp_params(c);
  return router_params(c) + shared_expert_params(c) + c.num_experts_per_tok * expert_params(c);
}

int64_t layer_norm_params(const ModelConfig& c) { return 2 * c.hidden_size; }  // input/post_attention_layernorm

int64_t layer_activated_params(const ModelConfig& c, int64_t layer) {
  return layer_norm_params(c) + attention_params(c) + ffn_activated_params(c, layer);
}

int64_t layer_activated_matmul_params(const ModelConfig& c, int64_t layer) {
  return attention_matmul_params(c) + ffn_activated_params(c, layer);
}

// MTP module parts around its decoder block: enorm, hnorm, eh_proj, shared_head.norm.
int64_t mtp_wrapper_norm_params(const ModelConfig& c) { return 3 * c.hidden_size; }
int64_t mtp_wrapper_matmul_params(const ModelConfig& c) { return 2 * c.hidden_size * c.hidden_size; }

}  // namespace

int64_t attention_params(const ModelConfig& c) { return attention_matmul_params(c) + attention_norm_params(c); }

int64_t dense_mlp_params(const ModelConfig& c) { return swiglu_params(c.hidden_size, c.intermediate_size); }

int64_t expert_params(const ModelConfig& c) { return swiglu_params(c.hidden_size, c.moe_intermediate_size); }

int64_t moe_params(const ModelConfig& c) {
  return router_params(c) + shared_expert_params(c) + c.n_routed_experts * expert_params(c);
}

int64_t decoder_layer_params(const ModelConfig& c, int64_t layer) {
  TANDEM_CHECK(layer >= 0 && layer < num_layers_with_mtp(c), "layer {} outside [0, {})", layer, num_layers_with_mtp(c));
  return layer_norm_params(c) + attention_params(c) + (c.is_moe_layer(layer) ? moe_params(c) : dense_mlp_params(c));
}

int64_t mtp_module_params(const ModelConfig& c, int64_t depth) {
  TANDEM_CHECK(depth >= 1 && depth <= c.num_nextn_predict_layers, "MTP depth {} outside [1, {}]", depth,
               c.num_nextn_predict_layers);
  return mtp_wrapper_norm_params(c) + mtp_wrapper_matmul_params(c) +
         decoder_layer_params(c, c.num_hidden_layers + depth - 1);
}

ModelSize compute_model_size(const ModelConfig& c) {
  ModelSize s;
  const int64_t vocab_by_d = c.vocab_size * c.hidden_size;
  s.embedding_params = vocab_by_d;
  s.head_params = c.tie_word_embeddings ? 0 : vocab_by_d;
  s.final_norm_params = c.hidden_size;
  s.total_params = s.embedding_params + s.head_params + s.final_norm_params;
  // The head is a matmul every token pays for, tied or not.
  s.activated_params = vocab_by_d + s.final_norm_params;
  s.activated_matmul_params = vocab_by_d;
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const int64_t n = decoder_layer_params(c, layer);
    s.layer_params.push_back(n);
    s.total_params += n;
    s.activated_params += layer_activated_params(c, layer);
    s.activated_matmul_params += layer_activated_matmul_params(c, layer);
  }
  for (int64_t depth = 1; depth <= c.num_nextn_predict_layers; ++depth) {
    const int64_t layer = c.num_hidden_layers + depth - 1;
    const int64_t n = mtp_module_params(c, depth);
    s.mtp_module_params.push_back(n);
    s.mtp_params += n;
    s.mtp_activated_params += mtp_wrapper_norm_params(c) + mtp_wrapper_matmul_params(c) +
                              layer_activated_params(c, layer) + vocab_by_d;
    s.mtp_activated_matmul_params += mtp_wrapper_matmul_params(c) + layer_activated_matmul_params(c, layer) +
                                     vocab_by_d;
  }
  s.attention_layers = num_layers_with_mtp(c);
  s.attention_heads = c.num_attention_heads;
  if (c.uses_gqa()) {
    s.attention_qk_dim = c.gqa_head_dim();
    s.attention_v_dim = c.gqa_head_dim();
  } else {
    s.attention_qk_dim = c.qk_nope_head_dim + c.qk_rope_head_dim;
    s.attention_v_dim = c.v_head_dim;
  }
  return s;
}

double ModelSize::train_flops_per_token(int64_t seq_length) const {
  const double matmul = 6.0 * static_cast<double>(activated_matmul_params + mtp_activated_matmul_params);
  const double mean_keys = (static_cast<double>(seq_length) + 1.0) / 2.0;
  // Forward: 2 FLOPs per multiply-add for q.k over d_qk and p.v over d_v; backward twice that.
  const double attention = 3.0 * 2.0 * static_cast<double>(attention_heads) *
                           static_cast<double>(attention_qk_dim + attention_v_dim) * mean_keys *
                           static_cast<double>(attention_layers);
  return matmul + attention;
}

int64_t stage_params(const ModelConfig& c, int64_t layer_begin, int64_t layer_end, bool has_embedding,
                     bool has_head_and_mtp) {
  TANDEM_CHECK(0 <= layer_begin && layer_begin <= layer_end && layer_end <= c.num_hidden_layers,
               "stage layers [{}, {}) outside [0, {}]", layer_begin, layer_end, c.num_hidden_layers);
  const int64_t vocab_by_d = c.vocab_size * c.hidden_size;
  int64_t n = 0;
  for (int64_t layer = layer_begin; layer < layer_end; ++layer) n += decoder_layer_params(c, layer);
  if (has_embedding) n += vocab_by_d;
  if (has_head_and_mtp) {
    n += c.hidden_size;                           // model.norm
    n += c.tie_word_embeddings ? 0 : vocab_by_d;  // lm_head
    for (int64_t depth = 1; depth <= c.num_nextn_predict_layers; ++depth) n += mtp_module_params(c, depth);
    const bool needs_embedding = c.tie_word_embeddings || c.num_nextn_predict_layers > 0;
    if (needs_embedding && !has_embedding) n += vocab_by_d;  // local copy, kept in sync with stage 0
  }
  return n;
}

}  // namespace tandem::model
