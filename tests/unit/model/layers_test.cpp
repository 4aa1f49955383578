// RMSNorm, rotary/YaRN, SwiGLU, GQA attention and MLA against references written here with
// plain tensor ops (docs/model.md), and their gradients against central finite differences in
// float64. Prints the worst error of each family.
#include <cmath>
#include <numbers>

#include "model/detail/decoder.h"
#include "test_util.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;
using detail::ForwardContext;

constexpr auto kF64 = at::kDouble;

// Random values for every parameter (std large enough to make the layers clearly nonlinear).
void randomize(torch::nn::Module& m, uint64_t seed, double std = 0.3) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0.0, std, gen);
}

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(kF64));
}

ForwardContext context(const ModelConfig& c, int64_t rope_dim, int64_t t) {
  ForwardContext ctx;
  ctx.rope = detail::make_rope_tables(c, rope_dim, t, kF64, at::kCPU);
  return ctx;
}

// --- references ------------------------------------------------------------------------------

at::Tensor ref_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt((x * x).mean(-1, true) + eps) * w;
}

// Rotary as complex multiplication of consecutive pairs by exp(i * pos * freq) * amplitude.
at::Tensor ref_rope(const at::Tensor& x, const at::Tensor& inv_freq, double amplitude) {
  const int64_t t = x.size(-2), d = x.size(-1);
  const at::Tensor angles = at::outer(at::arange(t, at::TensorOptions().dtype(kF64)), inv_freq);  // [T, d/2]
  const at::Tensor rot = at::polar(at::full_like(angles, amplitude), angles);                     // [T, d/2] complex
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = d / 2;
  shape.push_back(2);
  const at::Tensor z = at::view_as_complex(x.reshape(shape).contiguous());
  return at::view_as_real(z * rot).reshape(x.sizes());
}

at::Tensor ref_causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t t = q.size(-2);
  const at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * scale;  // [B, H, T, T]
  const at::Tensor future = at::ones({t, t}, at::TensorOptions().dtype(at::kBool)).triu(1);
  return at::matmul(at::softmax(scores.masked_fill(future, -INFINITY), -1), v);
}

at::Tensor ref_linear(const at::Tensor& x, const at::Tensor& w) { return at::matmul(x, w.t()); }

// --- RMSNorm -------------------------------------------------------------------------------

TEST(ModelLayers, RmsNormMatchesReferenceAndFiniteDifferences) {
  detail::RMSNorm norm(12, 1e-6);
  randomize(*norm, 1);
  norm->to(kF64);
  const at::Tensor x = randn({3, 5, 12}, 2).requires_grad_();
  const double fwd = max_abs_diff(norm->forward(x), ref_rms_norm(x, norm->weight, 1e-6));
  const double fd = finite_difference_error([&] { return weighted_sum(norm->forward(x)); }, {x, norm->weight});
  report("rmsnorm", "forward max abs err", fwd);
  report("rmsnorm", "grad vs finite diff (rel)", fd);
  EXPECT_LT(fwd, 1e-12);
  EXPECT_LT(fd, 1e-6);
  // fp32 statistics for a bf16 input: matches the fp64 reference to bf16 precision.
  const at::Tensor xb = x.detach().to(at::kBFloat16);
  EXPECT_LT(max_abs_diff(detail::rms_norm(xb, norm->weight.detach().to(at::kBFloat16), 1e-6),
                         ref_rms_norm(xb.to(kF64), norm->weight.detach(), 1e-6)),
            0.1);
}

// --- Rotary and YaRN -----------------------------------------------------------------------

TEST(ModelLayers, RopeMatchesComplexRotationAndFiniteDifferences) {
  ModelConfig c;
  const at::Tensor x = randn({2, 3, 7, 8}, 3).requires_grad_();
  const ForwardContext ctx = context(c, 8, 7);
  const at::Tensor ref = ref_rope(x, detail::rope_inv_freq(c, 8), 1.0);
  const double fwd = max_abs_diff(detail::apply_rope(x, ctx.rope), ref);
  const double fd = finite_difference_error([&] { return weighted_sum(detail::apply_rope(x, ctx.rope)); }, {x});
  // Rotation preserves the norm of each pair.
  const double norm_err = max_abs_diff(detail::apply_rope(x, ctx.rope).norm(2, -1), x.norm(2, -1));
  report("rope", "forward max abs err", fwd);
  report("rope", "grad vs finite diff (rel)", fd);
  EXPECT_LT(fwd, 1e-12);
  EXPECT_LT(fd, 1e-6);
  EXPECT_LT(norm_err, 1e-12);
  // Plain frequencies: theta^(-2i/d).
  const at::Tensor inv = detail::rope_inv_freq(c, 8);
  for (int64_t i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(inv[i].item<double>(), std::pow(10000.0, -2.0 * i / 8));
}

TEST(ModelLayers, YarnKeepsShortWavelengthsAndStretchesLongOnes) {
  ModelConfig c;  // DeepSeek-V3's extension: factor 40 over 4096, rope width 64
  c.rope_scaling.type = RopeScalingType::kYarn;
  c.rope_scaling.factor = 40;
  c.rope_scaling.original_max_position_embeddings = 4096;
  const int64_t d = 64;
  const at::Tensor inv = detail::rope_inv_freq(c, d);
  const double original = 4096;
  int kept = 0, divided = 0, ramped = 0;
  double previous_ratio = 1.0;
  for (int64_t i = 0; i < d / 2; ++i) {
    const double base = std::pow(c.rope_theta, -2.0 * i / d);
    const double wavelength = 2 * std::numbers::pi / base;
    const double ratio = inv[i].item<double>() / base;  // 1 = kept, 1/40 = divided
    if (wavelength < original / c.rope_scaling.beta_fast) {
      EXPECT_DOUBLE_EQ(ratio, 1.0) << "index " << i;
      ++kept;
    } else if (wavelength > original / c.rope_scaling.beta_slow) {
      EXPECT_NEAR(ratio, 1.0 / 40, 1e-15) << "index " << i;
      ++divided;
    } else {
      EXPECT_LE(ratio, 1.0);
      EXPECT_GE(ratio, 1.0 / 40);
      ++ramped;
    }
    EXPECT_LE(ratio, previous_ratio + 1e-15);  // monotone: longer wavelengths are stretched more
    previous_ratio = ratio;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(ramped, 0);
  // Softmax scale: (d_qk)^-0.5 * (0.1 * mscale_all_dim * ln(40) + 1)^2; rotary amplitude 1.
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_DOUBLE_EQ(detail::attention_softmax_scale(c, 192), m * m / std::sqrt(192.0));
  EXPECT_DOUBLE_EQ(detail::rope_amplitude(c), 1.0);
  c.rope_scaling.mscale = 0.707;
  EXPECT_NEAR(detail::rope_amplitude(c), (0.0707 * std::log(40.0) + 1) / m, 1e-15);
  std::printf("[rope] YaRN factor 40: %d kept, %d ramped, %d divided frequencies of %lld\n", kept, ramped, divided,
              static_cast<long long>(d / 2));
}

// --- SwiGLU --------------------------------------------------------------------------------

TEST(ModelLayers, SwiGluMatchesReference) {
  detail::SwiGLU mlp(10, 14);
  randomize(*mlp, 4);
  mlp->to(kF64);
  const at::Tensor x = randn({2, 3, 10}, 5).requires_grad_();
  ForwardContext ctx;
  const at::Tensor ref = ref_linear(
      at::silu(ref_linear(x, mlp->gate_proj->weight)) * ref_linear(x, mlp->up_proj->weight), mlp->down_proj->weight);
  const double fwd = max_abs_diff(mlp->forward(x, ctx), ref);
  const double fd = finite_difference_error([&] { return weighted_sum(mlp->forward(x, ctx)); },
                                            {x, mlp->gate_proj->weight, mlp->down_proj->weight});
  report("swiglu", "forward max abs err", fwd);
  report("swiglu", "grad vs finite diff (rel)", fd);
  EXPECT_LT(fwd, 1e-12);
  EXPECT_LT(fd, 1e-6);
}

// --- GQA / MHA ----------------------------------------------------------------------------

at::Tensor ref_gqa(const detail::GqaAttention& a, const ModelConfig& c, const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), h = c.num_attention_heads, kvh = c.num_key_value_heads;
  const int64_t hd = c.gqa_head_dim();
  const at::Tensor inv = detail::rope_inv_freq(c, hd);
  const double amp = detail::rope_amplitude(c);
  auto split = [&](const at::Tensor& y, int64_t heads) { return y.view({b, t, heads, hd}).permute({0, 2, 1, 3}); };
  const at::Tensor q = ref_rope(split(ref_linear(x, a->q_proj->weight), h), inv, amp);
  at::Tensor k = ref_rope(split(ref_linear(x, a->k_proj->weight), kvh), inv, amp);
  at::Tensor v = split(ref_linear(x, a->v_proj->weight), kvh);
  // Query head j uses KV head j / (h / kvh).
  const at::Tensor kv_of_head = at::arange(h, at::TensorOptions().dtype(at::kLong)).floor_divide(h / kvh);
  k = k.index_select(1, kv_of_head);
  v = v.index_select(1, kv_of_head);
  const at::Tensor o = ref_causal_attention(q, k, v, detail::attention_softmax_scale(c, hd));
  return ref_linear(o.permute({0, 2, 1, 3}).reshape({b, t, h * hd}), a->o_proj->weight);
}

TEST(ModelLayers, GqaAttentionMatchesReferenceAndFiniteDifferences) {
  double worst_fwd = 0, worst_fd = 0;
  for (int64_t kv_heads : {4, 2, 1}) {  // MHA, GQA, MQA
    ModelConfig c;
    c.attention_type = AttentionType::kGqa;
    c.hidden_size = 16;
    c.num_attention_heads = 4;
    c.num_key_value_heads = kv_heads;
    c.validate();
    detail::GqaAttention attn(c);
    randomize(*attn, 10 + kv_heads);
    attn->to(kF64);
    const at::Tensor x = randn({2, 5, 16}, 6).requires_grad_();
    ForwardContext ctx = context(c, c.gqa_head_dim(), 5);
    worst_fwd = std::max(worst_fwd, max_abs_diff(attn->forward(x, ctx), ref_gqa(attn, c, x)));
    worst_fd = std::max(worst_fd, finite_difference_error([&] { return weighted_sum(attn->forward(x, ctx)); },
                                                          {x, attn->q_proj->weight, attn->k_proj->weight,
                                                           attn->v_proj->weight, attn->o_proj->weight}));
  }
  report("attention", "forward max abs err", worst_fwd);
  report("attention", "grad vs finite diff (rel)", worst_fd);
  EXPECT_LT(worst_fwd, 1e-12);
  EXPECT_LT(worst_fd, 1e-6);
}

TEST(ModelLayers, AttentionIsCausal) {
  ModelConfig c;
  c.attention_type = AttentionType::kGqa;
  c.hidden_size = 16;
  detail::GqaAttention attn(c);
  randomize(*attn, 20);
  attn->to(kF64);
  const at::Tensor x = randn({1, 6, 16}, 21);
  at::Tensor x2 = x.clone();
  x2.narrow(1, 4, 2).normal_();  // change the future of position 3
  ForwardContext ctx = context(c, c.gqa_head_dim(), 6);
  const at::Tensor a = attn->forward(x, ctx), b = attn->forward(x2, ctx);
  EXPECT_EQ(max_abs_diff(a.narrow(1, 0, 4), b.narrow(1, 0, 4)), 0.0);
  EXPECT_GT(max_abs_diff(a.narrow(1, 4, 2), b.narrow(1, 4, 2)), 1e-6);
}

// --- MLA -------------------------------------------------------------------------------------

ModelConfig tiny_mla(bool q_lora, bool yarn) {
  ModelConfig c;
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  if (q_lora) {
    c.q_lora_rank = 8;
  } else {
    c.q_lora_rank.reset();
  }
  c.kv_lora_rank = 6;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 6;
  if (yarn) {
    c.rope_scaling.type = RopeScalingType::kYarn;
    c.rope_scaling.factor = 4;
    c.rope_scaling.original_max_position_embeddings = 4;
    c.rope_scaling.mscale = 0.8;  // != mscale_all_dim, so the rotary amplitude is exercised too
  }
  c.validate();
  return c;
}

// MLA written out from docs/model.md#mla-attention.
at::Tensor ref_mla(const detail::MlaAttention& a, const ModelConfig& c, const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), h = c.num_attention_heads;
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim, r = c.kv_lora_rank;
  const at::Tensor inv = detail::rope_inv_freq(c, dr);
  const double amp = detail::rope_amplitude(c);
  const double eps = c.rms_norm_eps;
  const at::Tensor q = c.q_lora_rank
                           ? ref_linear(ref_rms_norm(ref_linear(x, a->q_a_proj->weight), a->q_a_layernorm->weight, eps),
                                        a->q_b_proj->weight)
                           : ref_linear(x, a->q_proj->weight);
  const at::Tensor qh = q.view({b, t, h, dn + dr}).permute({0, 2, 1, 3});  // [B, H, T, dn+dr]
  const at::Tensor ckv_kr = ref_linear(x, a->kv_a_proj_with_mqa->weight);  // [B, T, r+dr]
  const at::Tensor c_kv = ckv_kr.slice(-1, 0, r);
  const at::Tensor k_rope = ref_rope(ckv_kr.slice(-1, r, r + dr).unsqueeze(1), inv, amp);  // [B, 1, T, dr]
  const at::Tensor kv = ref_linear(ref_rms_norm(c_kv, a->kv_a_layernorm->weight, eps), a->kv_b_proj->weight)
                            .view({b, t, h, dn + dv})
                            .permute({0, 2, 1, 3});  // [B, H, T, dn+dv]
  const at::Tensor q_full = at::cat({qh.slice(-1, 0, dn), ref_rope(qh.slice(-1, dn, dn + dr), inv, amp)}, -1);
  const at::Tensor k_full = at::cat({kv.slice(-1, 0, dn), k_rope.repeat({1, h, 1, 1})}, -1);
  double scale = 1.0 / std::sqrt(double(dn + dr));
  if (c.rope_scaling.type == RopeScalingType::kYarn) {
    const double m = 0.1 * c.rope_scaling.mscale_all_dim * std::log(c.rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  const at::Tensor o = ref_causal_attention(q_full, k_full, kv.slice(-1, dn, dn + dv), scale);  // [B, H, T, dv]
  return ref_linear(o.permute({0, 2, 1, 3}).reshape({b, t, h * dv}), a->o_proj->weight);
}

TEST(ModelLayers, MlaMatchesReferenceAndFiniteDifferences) {
  double worst_fwd = 0, worst_fd = 0;
  for (bool q_lora : {true, false}) {
    for (bool yarn : {false, true}) {
      const ModelConfig c = tiny_mla(q_lora, yarn);
      detail::MlaAttention attn(c);
      randomize(*attn, 30 + 2 * q_lora + yarn);
      attn->to(kF64);
      const at::Tensor x = randn({2, 6, 16}, 31).requires_grad_();
      ForwardContext ctx = context(c, c.qk_rope_head_dim, 6);
      worst_fwd = std::max(worst_fwd, max_abs_diff(attn->forward(x, ctx), ref_mla(attn, c, x)));
      std::vector<at::Tensor> wrt{x, attn->kv_a_proj_with_mqa->weight, attn->kv_b_proj->weight,
                                  attn->kv_a_layernorm->weight, attn->o_proj->weight};
      if (q_lora) {
        wrt.insert(wrt.end(), {attn->q_a_proj->weight, attn->q_a_layernorm->weight, attn->q_b_proj->weight});
      } else {
        wrt.push_back(attn->q_proj->weight);
      }
      worst_fd = std::max(worst_fd, finite_difference_error([&] { return weighted_sum(attn->forward(x, ctx)); }, wrt));
    }
  }
  report("mla", "forward max abs err", worst_fwd);
  report("mla", "grad vs finite diff (rel)", worst_fd);
  EXPECT_LT(worst_fwd, 1e-12);
  EXPECT_LT(worst_fd, 1e-6);
}

// --- Decoder layer wiring -------------------------------------------------------------------

TEST(ModelLayers, DecoderLayerIsPreNormResidual) {
  ModelConfig c = tiny_mla(true, false);
  c.intermediate_size = 20;
  c.moe_intermediate_size = 6;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.first_k_dense_replace = 1;
  c.validate();
  double worst = 0;
  for (int64_t layer : {0, 1}) {  // dense, then MoE
    detail::DecoderLayer block(c, layer);
    randomize(*block, 70 + layer);
    block->to(kF64);
    const at::Tensor x = randn({2, 5, 16}, 72);
    ForwardContext ctx = context(c, c.qk_rope_head_dim, 5);
    const at::Tensor h = x + block->mla->forward(ref_rms_norm(x, block->input_layernorm->weight, c.rms_norm_eps), ctx);
    const at::Tensor n2 = ref_rms_norm(h, block->post_attention_layernorm->weight, c.rms_norm_eps);
    const at::Tensor ref = h + (layer == 0 ? block->mlp->forward(n2, ctx) : block->moe->forward(n2, ctx));
    EXPECT_EQ(layer == 0, static_cast<bool>(block->mlp));
    worst = std::max(worst, max_abs_diff(block->forward(x, ctx), ref));
  }
  report("decoder", "layer vs pre-norm residual reference (max abs err)", worst);
  EXPECT_LT(worst, 1e-12);
}

}  // namespace
}  // namespace tandem::model
