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

#include <vector>

#include "model/detail/kv_cache.h"
#include "model/detail/layers.h"

namespace tandem::model::detail {

// Both attentions run in two parts, so that selective recomputation can redo the first in
// backward: project (x -> {q, k, v}, the core's inputs [B, H, T, *] with rotary applied) and
// attend (causal SDPA, then o_proj). forward = attend(project(x)). Both honour ctx.positions and
// ctx.attn_mask (packed rows). decode is the inference form: x [B, n, C] (replicated, never
// sequence-parallel) are the next n tokens of every row, written to `cache` at
// [ctx.kv_cache->length, + n) and attending to everything cached before them.
class GqaAttentionImpl : public torch::nn::Module {
 public:
  GqaAttentionImpl(const ModelConfig& config, const ParallelGroups& groups = {});
  // [B, T, C] -> [B, T, C] (replicated over tp), or [B, T/tp, C] -> [B, T/tp, C] (sequence parallel).
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx) { return attend(project(x, ctx), ctx); }
  std::vector<at::Tensor> project(const at::Tensor& x, ForwardContext& ctx);  // {q, k, v}, KV heads repeated
  at::Tensor attend(const std::vector<at::Tensor>& qkv, ForwardContext& ctx);
  at::Tensor decode(const at::Tensor& x, ForwardContext& ctx, LayerKv& cache);
  SplitLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;  // heads_ and kv_heads_ local to this tp rank
  double scale_;
};
TORCH_MODULE(GqaAttention);

class MlaAttentionImpl : public torch::nn::Module {
 public:
  MlaAttentionImpl(const ModelConfig& config, const ParallelGroups& groups = {});
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx) { return attend(project(x, ctx), ctx); }
  // {q [B, H, T, dn+dr], k [B, H, T, dn+dr], v [B, H, T, dv]}
  std::vector<at::Tensor> project(const at::Tensor& x, ForwardContext& ctx);
  at::Tensor attend(const std::vector<at::Tensor>& qkv, ForwardContext& ctx);
  // The absorbed form: kv_b_proj's key half is folded into the queries and its value half applied
  // after attention, so the heads attend to the cached latent directly and no per-head key or
  // value of the prefix is ever materialized.
  at::Tensor decode(const at::Tensor& x, ForwardContext& ctx, LayerKv& cache);
  // q_proj when q_lora_rank is null, else q_a_proj -> q_a_layernorm -> q_b_proj.
  SplitLinear q_proj{nullptr}, q_a_proj{nullptr}, q_b_proj{nullptr};
  RMSNorm q_a_layernorm{nullptr};
  SplitLinear kv_a_proj_with_mqa{nullptr}, kv_b_proj{nullptr}, o_proj{nullptr};
  RMSNorm kv_a_layernorm{nullptr};

 private:
  // The queries of x [B, T, C] (full sequence), rotary applied: {q_nope [B, H, T, dn], q_rope [B, H, T, dr]}.
  std::vector<at::Tensor> queries(const at::Tensor& x, ForwardContext& ctx);
  int64_t heads_, nope_dim_, rope_dim_, v_dim_, kv_rank_;  // heads_ local to this tp rank
  double scale_;
};
TORCH_MODULE(MlaAttention);

}  // namespace tandem::model::detail
