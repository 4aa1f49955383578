// Parameter and FLOP counting for a ModelConfig: pure arithmetic, no tensors, so check-config
// can size a 671B model on a laptop and MFU reporting can convert tokens/s into FLOP/s.
// Invariant: every count here equals the numel sum of the parameters the real modules in
// model/ create for the same config (a unit test checks this against the tiny model), and the
// per-module helpers mirror the module structure one to one (change both together).
// Buffers (the routing bias gate.e_score_correction_bias) are not parameters and not counted.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace tandem::model {

struct ModelSize {
  // Main model without MTP: embed_tokens + decoder layers + final norm + lm_head (0 when tied).
  // This is the "671B" of DeepSeek-V3.
  int64_t total_params = 0;
  // Parameters a token of the main model touches (DeepSeek's convention, which reproduces
  // their published V2 / V2-Lite / V3 figures): everything except the embedding table and the
  // routed experts it is not sent to; i.e. attention, norms, dense MLPs, router, shared experts,
  // K routed experts per MoE layer, final norm and lm_head (counted even when tied).
  int64_t activated_params = 0;
  // The matmul weights among activated_params (no norm weights): the "N" of 6N training FLOPs.
  int64_t activated_matmul_params = 0;
  int64_t embedding_params = 0;  // vocab * hidden
  int64_t head_params = 0;       // vocab * hidden, 0 when tie_word_embeddings
  int64_t final_norm_params = 0;
  // Extra parameters of the D MTP modules (their embedding and head are the main model's, so
  // they are not repeated here). HF/DeepSeek checkpoints store copies, hence "14B" for V3.
  int64_t mtp_params = 0;
  int64_t mtp_activated_params = 0;         // per token, all D modules together
  int64_t mtp_activated_matmul_params = 0;  // matmul part of the above (head counted once per depth)
  std::vector<int64_t> layer_params;        // per decoder layer (index 0 .. N-1)
  std::vector<int64_t> mtp_module_params;   // per MTP module (depth 1 .. D)

  // Everything the Model object holds: total_params + mtp_params.
  int64_t model_params() const { return total_params + mtp_params; }

  // Training FLOPs per token at `seq_length` for one forward + backward of the main model and
  // its MTP modules: 6 * (activated matmul params, the head once per MTP depth included) plus the
  // causal attention score and value products (3 * 2 * heads * (d_qk + d_v) * (T + 1) / 2 per
  // layer: on average a query attends to (T + 1) / 2 keys). Embedding lookups are free.
  double train_flops_per_token(int64_t seq_length) const;

  // Filled by compute_model_size for train_flops_per_token.
  int64_t attention_layers = 0;  // N + D
  int64_t attention_heads = 0;
  int64_t attention_qk_dim = 0;  // per head
  int64_t attention_v_dim = 0;   // per head
};

ModelSize compute_model_size(const ModelConfig& config);

// Per-module counts, mirroring the modules (used by compute_model_size and stage_params).
int64_t attention_params(const ModelConfig& config);
int64_t dense_mlp_params(const ModelConfig& config);                     // gate, up, down of intermediate_size
int64_t expert_params(const ModelConfig& config);                        // one routed expert (moe_intermediate_size)
int64_t moe_params(const ModelConfig& config);                           // router + shared + all routed experts
int64_t decoder_layer_params(const ModelConfig& config, int64_t layer);  // layer in [0, N + D)
int64_t mtp_module_params(const ModelConfig& config, int64_t depth);     // depth in [1, D]

// Parameters held by one pipeline stage made of decoder layers [layer_begin, layer_end)
// (half-open). `has_embedding`: the first stage. `has_head_and_mtp`: the last stage, holding the
// final norm, the head and the MTP modules; when it has no embedding of its own yet needs the
// embedding matrix (tied head, or MTP embedding lookups), it holds a copy, counted here.
int64_t stage_params(const ModelConfig& config, int64_t layer_begin, int64_t layer_end, bool has_embedding,
                     bool has_head_and_mtp);

}  // namespace tandem::model
