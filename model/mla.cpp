// Multi-head latent attention (docs/model.md#mla-attention): queries through an optional low-rank bottleneck,
// keys/values from a shared compressed latent c_kv plus one rotary key shared by all heads.
// Training materializes k_nope and v per head from kv_b_proj; decoding uses the absorbed form
// over the cached latent (see decode in detail/attention.h).
#include "model/detail/attention.h"

#include "runtime/error.h"

namespace tandem::model::detail {

MlaAttentionImpl::MlaAttentionImpl(const ModelConfig& c, const ParallelGroups& groups)
    : heads_(c.num_attention_heads / groups.tp_size()),
      nope_dim_(c.qk_nope_head_dim),
      rope_dim_(c.qk_rope_head_dim),
      v_dim_(c.v_head_dim),
      kv_rank_(c.kv_lora_rank) {
  TANDEM_CHECK_CONFIG(c.num_attention_heads % groups.tp_size() == 0,
                      "num_attention_heads = {} is not divisible by tp = {}", c.num_attention_heads, groups.tp_size());
  scale_ = attention_softmax_scale(c, nope_dim_ + rope_dim_);
  const int64_t q_width = heads_ * (nope_dim_ + rope_dim_);
  if (c.q_lora_rank) {
    q_a_proj = register_module("q_a_proj", SplitLinear(c.hidden_size, *c.q_lora_rank));
    q_a_layernorm = register_module("q_a_layernorm", RMSNorm(*c.q_lora_rank, c.rms_norm_eps));
    q_b_proj = register_module("q_b_proj", SplitLinear(*c.q_lora_rank, q_width));
  } else {
    q_proj = register_module("q_proj", SplitLinear(c.hidden_size, q_width));
  }
  kv_a_proj_with_mqa = register_module("kv_a_proj_with_mqa", SplitLinear(c.hidden_size, kv_rank_ + rope_dim_));
  kv_a_layernorm = register_module("kv_a_layernorm", RMSNorm(kv_rank_, c.rms_norm_eps));
  kv_b_proj = register_module("kv_b_proj", SplitLinear(kv_rank_, heads_ * (nope_dim_ + v_dim_)));
  o_proj = register_module("o_proj", SplitLinear(heads_ * v_dim_, c.hidden_size));
}

std::vector<at::Tensor> MlaAttentionImpl::queries(const at::Tensor& x, ForwardContext& ctx) {
  // x is [B, T, C], or this rank's slice [B, T/tp, C] under sequence parallelism: the replicated
  // down-projections run on it, and their (much narrower) outputs enter the tensor-parallel region.
  const at::Tensor q_flat =
      q_proj ? column_parallel_linear(x, q_proj->weight, ctx)
             : q_b_proj->forward(enter_tp_region(q_a_layernorm->forward(q_a_proj->forward(x, ctx)), ctx), ctx);
  const int64_t b = q_flat.size(0), t = q_flat.size(1);                                     // full sequence
  const at::Tensor q = q_flat.view({b, t, heads_, nope_dim_ + rope_dim_}).transpose(1, 2);  // [B, H, T, dn+dr]
  return {q.narrow(-1, 0, nope_dim_), apply_rope(q.narrow(-1, nope_dim_, rope_dim_), ctx)};
}

std::vector<at::Tensor> MlaAttentionImpl::project(const at::Tensor& x, ForwardContext& ctx) {
  const std::vector<at::Tensor> q = queries(x, ctx);  // q_nope [B, H, T, dn], q_rope [B, H, T, dr]
  const int64_t b = q[0].size(0), t = q[0].size(2);

  const at::Tensor compressed = kv_a_proj_with_mqa->forward(x, ctx);              // [B, T(/tp), kv_rank + dr]
  at::Tensor c_kv = kv_a_layernorm->forward(compressed.narrow(-1, 0, kv_rank_));  // [B, T(/tp), kv_rank]
  at::Tensor k_pe = compressed.narrow(-1, kv_rank_, rope_dim_);                   // [B, T(/tp), dr]
  if (ctx.tp_size() > 1) {
    // One collective for both: the latent and the shared rotary key feed every local head.
    const at::Tensor latent = enter_tp_region(at::cat({c_kv, k_pe}, -1), ctx);  // [B, T, kv_rank + dr]
    c_kv = latent.narrow(-1, 0, kv_rank_);
    k_pe = latent.narrow(-1, kv_rank_, rope_dim_);
  }
  const at::Tensor k_rope = apply_rope(k_pe.unsqueeze(1), ctx);  // [B, 1, T, dr]
  const at::Tensor kv =
      kv_b_proj->forward(c_kv, ctx).view({b, t, heads_, nope_dim_ + v_dim_}).transpose(1, 2);  // [B, H, T, dn+dv]
  const at::Tensor k_nope = kv.narrow(-1, 0, nope_dim_);                                       // [B, H, T, dn]
  // A copy, so that kv_b_proj's output (twice as wide) is not kept alive by the core's saved v.
  const at::Tensor v = kv.narrow(-1, nope_dim_, v_dim_).contiguous();  // [B, H, T, dv]

  const at::Tensor q_full = at::cat(q, -1);                                                   // [B, H, T, dn+dr]
  const at::Tensor k_full = at::cat({k_nope, k_rope.expand({b, heads_, t, rope_dim_})}, -1);  // [B, H, T, dn+dr]
  return {q_full, k_full, v};
}

at::Tensor MlaAttentionImpl::attend(const std::vector<at::Tensor>& qkv, ForwardContext& ctx) {
  const at::Tensor o = causal_attention(qkv[0], qkv[1], qkv[2], scale_, ctx);  // [B, H, T, dv]
  const int64_t b = o.size(0), t = o.size(2);
  const at::Tensor merged = o.transpose(1, 2).reshape({b, t, heads_ * v_dim_});  // [B, T, H*dv]
  return row_parallel_linear(merged, o_proj->weight, ctx);                       // [B, T(/tp), C]
}

at::Tensor MlaAttentionImpl::decode(const at::Tensor& x, ForwardContext& ctx, LayerKv& cache) {
  TANDEM_CHECK(ctx.kv_cache && !ctx.sequence_parallel, "MLA decode needs a cache and replicated activations");
  const std::vector<at::Tensor> q = queries(x, ctx);  // q_nope [B, H, n, dn], q_rope [B, H, n, dr]
  const int64_t b = x.size(0), n = x.size(1);
  const at::Tensor compressed = kv_a_proj_with_mqa->forward(x, ctx);                    // [B, n, kv_rank + dr]
  const at::Tensor c_kv = kv_a_layernorm->forward(compressed.narrow(-1, 0, kv_rank_));  // [B, n, kv_rank]
  const at::Tensor k_rope = apply_rope(compressed.narrow(-1, kv_rank_, rope_dim_).unsqueeze(1), ctx);  // [B, 1, n, dr]
  const at::Tensor latent = append_to_cache(cache.first, c_kv, 1, *ctx.kv_cache);                   // [B, S, kv_rank]
  const at::Tensor rope_keys = append_to_cache(cache.second, k_rope.squeeze(1), 1, *ctx.kv_cache);  // [B, S, dr]

  // score(i, j) = q_nope_i . (W_uk c_j) + q_rope_i . k_rope_j = (W_uk^T q_nope_i) . c_j + ...:
  // fold this rank's W_uk [H, dn, kv_rank] into the queries and attend to [c_kv, k_rope] directly.
  const at::Tensor w = kv_b_proj->weight.view({heads_, nope_dim_ + v_dim_, kv_rank_});
  const at::Tensor q_latent = at::matmul(q[0], w.narrow(1, 0, nope_dim_));  // [B, H, n, kv_rank]
  const at::Tensor keys = at::cat({latent, rope_keys}, -1).unsqueeze(1);    // [B, 1, S, kv_rank+dr]
  const at::Tensor o_latent = cached_attention(at::cat({q_latent, q[1]}, -1), keys, latent.unsqueeze(1), scale_,
                                               ctx.attn_mask);                                // [B, H, n, kv_rank]
  const at::Tensor o = at::matmul(o_latent, w.narrow(1, nope_dim_, v_dim_).transpose(1, 2));  // [B, H, n, dv]
  const at::Tensor merged = o.transpose(1, 2).reshape({b, n, heads_ * v_dim_});               // [B, n, H*dv]
  return row_parallel_linear(merged, o_proj->weight, ctx);                                    // [B, n, C]
}

}  // namespace tandem::model::detail
