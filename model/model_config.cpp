// ModelConfig::validate: the cross-field rules that per-field bounds in visit() cannot express.
// Each failure names the full key ("model.<field>") and says what would make it valid, so the
// YAML loader can point at the offending line. Runs before any tensor is allocated.
#include "model/model_config.h"

namespace tandem::model {

void ModelConfig::validate() const {
  TANDEM_CONFIG_REQUIRE(vocab_size >= 2, "model.vocab_size", "must be at least 2 (got {})", vocab_size);
  TANDEM_CONFIG_REQUIRE(rms_norm_eps > 0, "model.rms_norm_eps", "must be positive (got {})", rms_norm_eps);
  TANDEM_CONFIG_REQUIRE(first_k_dense_replace <= num_hidden_layers, "model.first_k_dense_replace",
                        "{} dense layers requested but the model has only num_hidden_layers = {}",
                        first_k_dense_replace, num_hidden_layers);

  // Attention.
  if (uses_gqa()) {
    TANDEM_CONFIG_REQUIRE(num_attention_heads % num_key_value_heads == 0, "model.num_key_value_heads",
                          "num_attention_heads = {} must be a multiple of num_key_value_heads = {}",
                          num_attention_heads, num_key_value_heads);
    TANDEM_CONFIG_REQUIRE(head_dim > 0 || hidden_size % num_attention_heads == 0, "model.num_attention_heads",
                          "hidden_size = {} is not divisible by num_attention_heads = {}; set model.head_dim",
                          hidden_size, num_attention_heads);
    TANDEM_CONFIG_REQUIRE(gqa_head_dim() % 2 == 0, "model.head_dim",
                          "rotary embedding needs an even head width (got {})", gqa_head_dim());
  } else {
    TANDEM_CONFIG_REQUIRE(qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim",
                          "rotary embedding needs an even width (got {})", qk_rope_head_dim);
  }

  // Rotary scaling.
  if (rope_scaling.type == RopeScalingType::kYarn) {
    TANDEM_CONFIG_REQUIRE(rope_scaling.factor >= 1.0, "model.rope_scaling.factor",
                          "YaRN extends the context, so factor must be >= 1 (got {})", rope_scaling.factor);
    TANDEM_CONFIG_REQUIRE(rope_scaling.beta_fast > rope_scaling.beta_slow, "model.rope_scaling.beta_fast",
                          "beta_fast = {} must exceed beta_slow = {} (the ramp runs between them)",
                          rope_scaling.beta_fast, rope_scaling.beta_slow);
    TANDEM_CONFIG_REQUIRE(rope_scaling.beta_slow > 0, "model.rope_scaling.beta_slow", "must be positive (got {})",
                          rope_scaling.beta_slow);
  } else {
    TANDEM_CONFIG_REQUIRE(rope_scaling.factor == 1.0, "model.rope_scaling.factor",
                          "factor = {} has no effect unless rope_scaling.type is yarn", rope_scaling.factor);
  }

  // Mixture of experts.
  if (n_routed_experts > 0) {
    TANDEM_CONFIG_REQUIRE(n_routed_experts % n_group == 0, "model.n_group",
                          "n_routed_experts = {} must split into n_group = {} equal groups", n_routed_experts, n_group);
    TANDEM_CONFIG_REQUIRE(topk_group <= n_group, "model.topk_group", "topk_group = {} exceeds n_group = {}", topk_group,
                          n_group);
    TANDEM_CONFIG_REQUIRE(num_experts_per_tok <= n_routed_experts, "model.num_experts_per_tok",
                          "K = {} exceeds n_routed_experts = {}", num_experts_per_tok, n_routed_experts);
    const int64_t experts_per_group = n_routed_experts / n_group;
    TANDEM_CONFIG_REQUIRE(num_experts_per_tok <= topk_group * experts_per_group, "model.num_experts_per_tok",
                          "K = {} exceeds the {} experts in the topk_group = {} kept groups of {}", num_experts_per_tok,
                          topk_group * experts_per_group, topk_group, experts_per_group);
  }
}

}  // namespace tandem::model
