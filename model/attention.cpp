// Multi-head / grouped-query attention: q/k/v/o projections, rotary on q and k, causal
// scaled-dot-product attention. KV heads are repeated to the query heads before SDPA (whole
// tensors, no per-head loop).
#include "model/detail/attention.h"

#include <limits>

#include "runtime/error.h"

namespace tandem::model::detail {

GqaAttentionImpl::GqaAttentionImpl(const ModelConfig& c, const ParallelGroups& groups)
    : heads_(c.num_attention_heads / groups.tp_size()),
      kv_heads_(c.num_key_value_heads / groups.tp_size()),
      head_dim_(c.gqa_head_dim()) {
  TANDEM_CHECK_CONFIG(c.num_attention_heads % groups.tp_size() == 0 && c.num_key_value_heads % groups.tp_size() == 0,
                      "num_attention_heads = {} and num_key_value_heads = {} must be divisible by tp = {}",
                      c.num_attention_heads, c.num_key_value_heads, groups.tp_size());
  scale_ = attention_softmax_scale(c, head_dim_);
  q_proj = register_module("q_proj", SplitLinear(c.hidden_size, heads_ * head_dim_));
  k_proj = register_module("k_proj", SplitLinear(c.hidden_size, kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", SplitLinear(c.hidden_size, kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", SplitLinear(heads_ * head_dim_, c.hidden_size));
}

std::vector<at::Tensor> GqaAttentionImpl::project(const at::Tensor& x_local, ForwardContext& ctx) {
  const at::Tensor x = enter_tp_region(x_local, ctx);  // [B, T, C] full sequence
  const int64_t b = x.size(0), t = x.size(1);
  auto heads_first = [&](const at::Tensor& y, int64_t h) {  // [B, T, h*hd] -> [B, h, T, hd]
    return y.view({b, t, h, head_dim_}).transpose(1, 2);
  };
  at::Tensor q = apply_rope(heads_first(q_proj->forward(x, ctx), heads_), ctx);     // [B, H, T, hd]
  at::Tensor k = apply_rope(heads_first(k_proj->forward(x, ctx), kv_heads_), ctx);  // [B, KV, T, hd]
  at::Tensor v = heads_first(v_proj->forward(x, ctx), kv_heads_);                   // [B, KV, T, hd]
  if (kv_heads_ != heads_) {
    const int64_t groups = heads_ / kv_heads_;
    k = k.repeat_interleave(groups, 1);  // [B, H, T, hd]
    v = v.repeat_interleave(groups, 1);
  }
  return {q, k, v};
}

at::Tensor GqaAttentionImpl::attend(const std::vector<at::Tensor>& qkv, ForwardContext& ctx) {
  const at::Tensor o = causal_attention(qkv[0], qkv[1], qkv[2], scale_, ctx);  // [B, H, T, hd]
  const int64_t b = o.size(0), t = o.size(2);
  const at::Tensor merged = o.transpose(1, 2).reshape({b, t, heads_ * head_dim_});  // [B, T, H*hd]
  return row_parallel_linear(merged, o_proj->weight, ctx);                          // [B, T(/tp), C]
}

at::Tensor GqaAttentionImpl::decode(const at::Tensor& x, ForwardContext& ctx, LayerKv& cache) {
  TANDEM_CHECK(ctx.kv_cache && !ctx.sequence_parallel, "GQA decode needs a cache and replicated activations");
  const int64_t b = x.size(0), n = x.size(1);
  auto heads_first = [&](const at::Tensor& y, int64_t h) {  // [B, n, h*hd] -> [B, h, n, hd]
    return y.view({b, n, h, head_dim_}).transpose(1, 2);
  };
  const at::Tensor q = apply_rope(heads_first(q_proj->forward(x, ctx), heads_), ctx);  // [B, H, n, hd]
  const at::Tensor k_new = apply_rope(heads_first(k_proj->forward(x, ctx), kv_heads_), ctx);
  at::Tensor k = append_to_cache(cache.first, k_new, 2, *ctx.kv_cache);  // [B, KV, S, hd]
  at::Tensor v = append_to_cache(cache.second, heads_first(v_proj->forward(x, ctx), kv_heads_), 2, *ctx.kv_cache);
  if (kv_heads_ != heads_) {
    k = k.repeat_interleave(heads_ / kv_heads_, 1);  // [B, H, S, hd]
    v = v.repeat_interleave(heads_ / kv_heads_, 1);
  }
  const at::Tensor o = cached_attention(q, k, v, scale_, ctx.attn_mask);            // [B, H, n, hd]
  const at::Tensor merged = o.transpose(1, 2).reshape({b, n, heads_ * head_dim_});  // [B, n, H*hd]
  return row_parallel_linear(merged, o_proj->weight, ctx);                          // [B, n, C]
}

at::Tensor append_to_cache(at::Tensor& slot, const at::Tensor& values, int64_t dim, const KvCache& cache) {
  const int64_t n = values.size(dim);
  TANDEM_CHECK(cache.length + n <= cache.capacity, "KV cache of {} positions cannot take {} more after {}",
               cache.capacity, n, cache.length);
  if (!slot.defined()) {
    std::vector<int64_t> shape = values.sizes().vec();
    shape[dim] = cache.capacity;
    slot = at::zeros(shape, values.options());
  }
  slot.narrow(dim, cache.length, n).copy_(values);
  return slot.narrow(dim, 0, cache.length + n);
}

at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const at::Tensor& mask) {
  const at::ScalarType compute = at::promote_types(q.scalar_type(), at::kFloat);
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)).to(compute) * scale;  // [B, H, n, S]
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
  return at::matmul(at::softmax(scores, -1).to(v.scalar_type()), v);  // [B, H, n, dv]
}

}  // namespace tandem::model::detail
