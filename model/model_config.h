// ModelConfig: the shape of a DeepSeek-V3-family transformer (docs/model.md). Field names are those
// of Hugging Face's DeepseekV3Config, so a config and an export map one to one; the few tandem
// additions (attention_type, mtp_loss_weight, bias_update_speed, ...) are marked as such.
// Plain data: no LibTorch here, so check-config and the simulator can size models cheaply.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/config_schema.h"

namespace tandem::model {

// model.attention_type (a tandem addition): multi-head latent attention, or grouped-query
// attention, which covers MHA (num_key_value_heads = num_attention_heads).
enum class AttentionType { kMla, kGqa };
inline constexpr config::EnumNames<AttentionType, 2> kAttentionTypeNames{
    {{AttentionType::kMla, "mla"}, {AttentionType::kGqa, "gqa"}}};
constexpr const auto& config_enum_names(AttentionType) { return kAttentionTypeNames; }

// model.rope_scaling.type: rotary frequencies as trained, or YaRN-extended (docs/model.md).
enum class RopeScalingType { kNone, kYarn };
inline constexpr config::EnumNames<RopeScalingType, 2> kRopeScalingTypeNames{
    {{RopeScalingType::kNone, "none"}, {RopeScalingType::kYarn, "yarn"}}};
constexpr const auto& config_enum_names(RopeScalingType) { return kRopeScalingTypeNames; }

// model.scoring_func: the router's affinity function (DeepSeek-V3: sigmoid).
enum class ScoringFunc { kSigmoid, kSoftmax };
inline constexpr config::EnumNames<ScoringFunc, 2> kScoringFuncNames{
    {{ScoringFunc::kSigmoid, "sigmoid"}, {ScoringFunc::kSoftmax, "softmax"}}};
constexpr const auto& config_enum_names(ScoringFunc) { return kScoringFuncNames; }

struct RopeScalingConfig {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;

  template <class V>
  void visit(V& v) {
    v("type", type, {.doc = "Context-extension method for rotary embeddings"});
    v("factor", factor, {.doc = "YaRN scale factor (new context / original context)", .min = 1.0});
    v("original_max_position_embeddings", original_max_position_embeddings,
      {.doc = "Context length the rotary frequencies were trained for", .min = 1});
    v("beta_fast", beta_fast,
      {.doc = "YaRN: wavelengths shorter than original/beta_fast keep their frequency", .min = 0});
    v("beta_slow", beta_slow,
      {.doc = "YaRN: wavelengths longer than original/beta_slow are divided by factor", .min = 0});
    v("mscale", mscale, {.doc = "YaRN attention-temperature coefficient", .min = 0});
    v("mscale_all_dim", mscale_all_dim, {.doc = "YaRN: mscale applied to the softmax scale (MLA)", .min = 0});
  }
};

struct ModelConfig {
  int64_t vocab_size = 320;
  int64_t hidden_size = 256;
  int64_t num_hidden_layers = 4;
  int64_t intermediate_size = 512;      // dense MLP width (first_k_dense_replace layers)
  int64_t moe_intermediate_size = 128;  // width of each routed / shared expert
  int64_t num_attention_heads = 4;
  int64_t num_key_value_heads = 4;                     // GQA groups (attention_type gqa)
  AttentionType attention_type = AttentionType::kMla;  // tandem addition
  int64_t head_dim = 0;                                // gqa head width; 0 = hidden_size / num_attention_heads
  std::optional<int64_t> q_lora_rank;                  // MLA query compression; null = direct q_proj
  int64_t kv_lora_rank = 64;
  int64_t qk_nope_head_dim = 32;
  int64_t qk_rope_head_dim = 16;
  int64_t v_head_dim = 32;
  int64_t n_routed_experts = 8;
  int64_t n_shared_experts = 1;
  int64_t num_experts_per_tok = 2;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  ScoringFunc scoring_func = ScoringFunc::kSigmoid;
  int64_t first_k_dense_replace = 1;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;
  RopeScalingConfig rope_scaling;
  bool tie_word_embeddings = false;
  int64_t num_nextn_predict_layers = 1;  // MTP depth D
  double mtp_loss_weight = 0.3;          // tandem: lambda in L = L_main + lambda/D * sum L_k
  double aux_loss_alpha = 0.0;           // sequence-wise balance loss weight (V3: 1e-4)
  double bias_update_speed = 0.001;      // tandem: gamma of the auxiliary-loss-free bias update
  double capacity_factor = 0.0;          // tandem: 0 = no token dropping (V3)
  bool force_balanced_routing = false;   // tandem, benchmarks only: see docs/model.md#moe-routing
  double initializer_range = 0.006;

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size,
      {.doc = "Vocabulary size (byte tokenizer: 256 bytes + special tokens, padded)", .min = 1});
    v("hidden_size", hidden_size, {.doc = "Model width d", .min = 1});
    v("num_hidden_layers", num_hidden_layers, {.doc = "Decoder layers N (MTP modules not included)", .min = 1});
    v("intermediate_size", intermediate_size, {.doc = "Dense SwiGLU MLP width", .min = 1});
    v("moe_intermediate_size", moe_intermediate_size, {.doc = "Width of each routed and shared expert", .min = 1});
    v("num_attention_heads", num_attention_heads, {.doc = "Attention heads", .min = 1});
    v("num_key_value_heads", num_key_value_heads,
      {.doc = "Key/value heads for gqa attention (= heads for MHA)", .min = 1});
    v("attention_type", attention_type,
      {.doc = "mla (multi-head latent attention) or gqa (grouped-query / multi-head)"});
    v("head_dim", head_dim, {.doc = "gqa head width; 0 means hidden_size / num_attention_heads", .min = 0});
    v("q_lora_rank", q_lora_rank, {.doc = "MLA query low-rank dimension; null for a direct q_proj", .min = 1});
    v("kv_lora_rank", kv_lora_rank, {.doc = "MLA compressed key/value dimension", .min = 1});
    v("qk_nope_head_dim", qk_nope_head_dim, {.doc = "MLA per-head query/key width without rotary", .min = 1});
    v("qk_rope_head_dim", qk_rope_head_dim, {.doc = "MLA per-head rotary query/key width (even)", .min = 2});
    v("v_head_dim", v_head_dim, {.doc = "MLA per-head value width", .min = 1});
    v("n_routed_experts", n_routed_experts,
      {.doc = "Routed experts per MoE layer; 0 makes every layer dense", .min = 0});
    v("n_shared_experts", n_shared_experts, {.doc = "Shared experts per MoE layer", .min = 0});
    v("num_experts_per_tok", num_experts_per_tok, {.doc = "Routed experts chosen per token (K)", .min = 1});
    v("n_group", n_group, {.doc = "Expert groups for group-limited routing", .min = 1});
    v("topk_group", topk_group, {.doc = "Groups kept per token before the top-K choice", .min = 1});
    v("routed_scaling_factor", routed_scaling_factor, {.doc = "Multiplier on routed gate values", .min = 0});
    v("norm_topk_prob", norm_topk_prob, {.doc = "Normalise gate values over the chosen experts"});
    v("scoring_func", scoring_func, {.doc = "Router affinity: sigmoid (V3) or softmax"});
    v("first_k_dense_replace", first_k_dense_replace,
      {.doc = "Leading layers that use the dense MLP instead of MoE", .min = 0});
    v("rms_norm_eps", rms_norm_eps, {.doc = "RMSNorm epsilon", .min = 0});
    v("rope_theta", rope_theta, {.doc = "Rotary base frequency", .min = 1});
    v("max_position_embeddings", max_position_embeddings, {.doc = "Longest sequence the model supports", .min = 1});
    v.section("rope_scaling", rope_scaling, "YaRN context extension");
    v("tie_word_embeddings", tie_word_embeddings, {.doc = "Share the embedding matrix with lm_head"});
    v("num_nextn_predict_layers", num_nextn_predict_layers,
      {.doc = "Multi-token-prediction depth D (0 = off)", .min = 0});
    v("mtp_loss_weight", mtp_loss_weight, {.doc = "MTP loss weight lambda", .min = 0});
    v("aux_loss_alpha", aux_loss_alpha, {.doc = "Sequence-wise balance loss weight alpha (0 = off)", .min = 0});
    v("bias_update_speed", bias_update_speed,
      {.doc = "Auxiliary-loss-free balancing: bias step gamma per optimizer step", .min = 0});
    v("capacity_factor", capacity_factor,
      {.doc = "Expert capacity as a multiple of the even share; 0 = no token dropping", .min = 0});
    v("force_balanced_routing", force_balanced_routing,
      {.doc = "Benchmarks only: token n's k-th expert is (n*K + k) mod E instead of the router's choice "
              "(gates still from the router), so every expert gets the same load"});
    v("initializer_range", initializer_range, {.doc = "Standard deviation of the normal weight init", .min = 0});
  }

  // Cross-field rules (e.g. experts divisible into groups). Throws config::KeyError.
  void validate() const;

  bool is_moe_layer(int64_t layer) const { return n_routed_experts > 0 && layer >= first_k_dense_replace; }
  int64_t gqa_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
  bool uses_gqa() const { return attention_type == AttentionType::kGqa; }
  // YaRN frequencies and softmax scale apply (the type is yarn and the factor stretches).
  bool uses_yarn() const { return rope_scaling.type == RopeScalingType::kYarn && rope_scaling.factor > 1.0; }
};

}  // namespace tandem::model
