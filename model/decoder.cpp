// Decoder layer: x += attn(input_layernorm(x)); x += ffn(post_attention_layernorm(x)), the ffn
// a dense SwiGLU for the first first_k_dense_replace layers and MoE after. MTP module: the
// combination projection in front of one such layer (docs/model.md#multi-token-prediction).
#include "model/detail/decoder.h"

#include "model/detail/recompute.h"

#include "runtime/error.h"

namespace tandem::model::detail {

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, int64_t layer, const ParallelGroups& groups) : layer_(layer) {
  input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps);
  post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps);
  if (c.uses_gqa()) {
    gqa = GqaAttention(c, groups);
  } else {
    mla = MlaAttention(c, groups);
  }
  if (c.is_moe_layer(layer)) {
    moe = MoE(c, layer, groups);
  } else {
    TANDEM_CHECK_CONFIG(c.intermediate_size % groups.tp_size() == 0,
                        "intermediate_size = {} is not divisible by tp = {}", c.intermediate_size, groups.tp_size());
    mlp = SwiGLU(c.hidden_size, c.intermediate_size / groups.tp_size());
  }
  register_children_on(*this);
}

void DecoderLayerImpl::register_children_on(torch::nn::Module& owner) {
  owner.register_module("input_layernorm", input_layernorm);
  if (gqa) owner.register_module("self_attn", gqa);
  if (mla) owner.register_module("self_attn", mla);
  owner.register_module("post_attention_layernorm", post_attention_layernorm);
  if (mlp) owner.register_module("mlp", mlp);
  if (moe) owner.register_module("mlp", moe);
}

std::vector<at::Tensor> DecoderLayerImpl::attention_inputs(const at::Tensor& x, ForwardContext& ctx) {
  // Through an alias: the norm reads x more than once, and its gradients are summed here before
  // they meet the residual's, so that sum is grouped the same whether or not this part is
  // recomputed (selective recomputation stays bit-identical).
  const at::Tensor normed = input_layernorm->forward(x.view_as(x));  // [B, T, C]
  return mla ? mla->project(normed, ctx) : gqa->project(normed, ctx);
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, ForwardContext& ctx) {
  if (ctx.kv_cache) {
    // Decoding: attention reads and extends this layer's cache; nothing is recomputed.
    LayerKv& cache = ctx.kv_cache->layers[layer_];
    const at::Tensor normed = input_layernorm->forward(x);
    const at::Tensor h = x + (mla ? mla->decode(normed, ctx, cache) : gqa->decode(normed, ctx, cache));
    const at::Tensor normed2 = post_attention_layernorm->forward(h);
    return h + (moe ? moe->forward(normed2, ctx) : mlp->forward_parallel(normed2, ctx));
  }
  std::vector<at::Tensor> qkv;
  if (ctx.recompute_attention_inputs && !ctx.recomputing) {
    // Selective recomputation: only x and the core's q, k, v stay alive until backward.
    auto self = std::static_pointer_cast<DecoderLayerImpl>(shared_from_this());
    qkv = run_recomputed_in_backward(
        [self](const std::vector<at::Tensor>& in, ForwardContext& c) { return self->attention_inputs(in[0], c); }, {x},
        ctx);
  } else {
    qkv = attention_inputs(x, ctx);
  }
  const at::Tensor h = x + (mla ? mla->attend(qkv, ctx) : gqa->attend(qkv, ctx));  // [B, T, C]
  const at::Tensor normed2 = post_attention_layernorm->forward(h);
  return h + (moe ? moe->forward(normed2, ctx) : mlp->forward_parallel(normed2, ctx));  // [B, T, C]
}

MtpModuleImpl::MtpModuleImpl(const ModelConfig& c, int64_t depth, const ParallelGroups& groups) : depth_(depth) {
  TANDEM_CHECK(depth >= 1 && depth <= c.num_nextn_predict_layers, "MTP depth {} outside [1, {}]", depth,
               c.num_nextn_predict_layers);
  enorm = register_module("enorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  hnorm = register_module("hnorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  eh_proj = register_module("eh_proj", SplitLinear(2 * c.hidden_size, c.hidden_size));
  auto shared_head = register_module("shared_head", std::make_shared<torch::nn::Module>());
  head_norm = shared_head->register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  // The block's parameters live flat under model.layers.{N+k-1}. (HF layout), so the block is
  // not registered as a child; its children are.
  block = DecoderLayer(c, c.num_hidden_layers + depth - 1, groups);
  block->register_children_on(*this);
}

at::Tensor MtpModuleImpl::forward(const at::Tensor& prev, const at::Tensor& emb, ForwardContext& ctx) {
  TANDEM_CHECK(prev.sizes() == emb.sizes(), "MTP inputs differ: hidden {} vs embedding {}", c10::str(prev.sizes()),
               c10::str(emb.sizes()));
  const at::Tensor combined = at::cat({enorm->forward(emb), hnorm->forward(prev)}, -1);  // [B, T', 2C]
  return block->forward(eh_proj->forward(combined, ctx), ctx);                           // [B, T', C]
}

}  // namespace tandem::model::detail
