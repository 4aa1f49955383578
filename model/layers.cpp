// RMSNorm, SwiGLU and rotary embedding with YaRN (docs/model.md#rmsnorm, #swiglu,
// #rotary-embedding). Numerics: norm statistics and rotary tables are computed in at least fp32
// (tables in float64, then cast), so a bf16 model does not lose the rotary phase at long positions.
#include <ATen/autocast_mode.h>

#include <cmath>
#include <numbers>

#include "model/detail/fused_dense.h"
#include "model/detail/layers.h"
#include "runtime/error.h"

namespace tandem::model::detail {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor out = rms_norm_fused_or_composite(x, weight, eps);
  // Under autocast every reader of a norm's output is a matmul that would cast it to the compute
  // type anyway (q/k/v, gate/up, the router's input, the head): cast once here instead of once
  // per reader, and the readers' input gradients come back summed in that type rather than
  // cast to fp32 one by one (on the dense 1B step ~5 casts per layer each way).
  const c10::DeviceType device_type = x.device().type();
  if (at::autocast::is_autocast_enabled(device_type)) return out.to(at::autocast::get_autocast_dtype(device_type));
  return out;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::empty({dim}));
}

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab_size, int64_t dim, int64_t tp_size, int64_t tp_rank) {
  TANDEM_CHECK_CONFIG(vocab_size % tp_size == 0, "vocab_size = {} is not divisible by tp = {}", vocab_size, tp_size);
  vocab_start_ = tp_rank * (vocab_size / tp_size);
  weight = register_parameter("weight", torch::empty({vocab_size / tp_size, dim}));
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t width) {
  gate_proj = register_module("gate_proj", SplitLinear(dim, width));
  up_proj = register_module("up_proj", SplitLinear(dim, width));
  down_proj = register_module("down_proj", SplitLinear(width, dim));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x, ForwardContext& ctx) {
  const at::Tensor hidden =
      swiglu_gate_differentiable(gate_proj->forward(x, ctx), up_proj->forward(x, ctx));  // [..., width]
  return down_proj->forward(hidden, ctx);
}

namespace {

double yarn_mscale(double factor, double m) { return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }

// Frequency index whose wavelength fits `rotations` times into the original context:
// 2 pi theta^(2i/d) = L / rotations  =>  i = d ln(L / (2 pi rotations)) / (2 ln theta).
double correction_dim(double rotations, int64_t dim, double theta, double original_len) {
  return static_cast<double>(dim) * std::log(original_len / (rotations * 2.0 * std::numbers::pi)) /
         (2.0 * std::log(theta));
}

}  // namespace

at::Tensor rope_inv_freq(const ModelConfig& c, int64_t rope_dim) {
  TANDEM_CHECK(rope_dim % 2 == 0, "rotary width {} must be even", rope_dim);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor index = at::arange(0, rope_dim / 2, opts);                // [d/2]
  const at::Tensor base = at::pow(c.rope_theta, index * (-2.0 / rope_dim));  // theta^(-2i/d)
  if (!c.uses_yarn()) return base;
  const auto& y = c.rope_scaling;
  const double original = static_cast<double>(y.original_max_position_embeddings);
  double low = std::floor(correction_dim(y.beta_fast, rope_dim, c.rope_theta, original));
  double high = std::ceil(correction_dim(y.beta_slow, rope_dim, c.rope_theta, original));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(rope_dim - 1));
  if (high == low) high += 0.001;  // avoid a zero-width ramp
  // ramp 0 below `low` (short wavelengths: keep), 1 above `high` (long: divide by factor).
  const at::Tensor ramp = ((index - low) / (high - low)).clamp(0.0, 1.0);
  return base * (1.0 - ramp) + (base / y.factor) * ramp;
}

double rope_amplitude(const ModelConfig& c) {
  if (!c.uses_yarn()) return 1.0;
  return yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale) /
         yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
}

double attention_softmax_scale(const ModelConfig& c, int64_t qk_head_dim) {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim));
  if (c.uses_yarn()) {
    const double m = yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

RopeTables make_rope_tables(const ModelConfig& c, int64_t rope_dim, int64_t length, at::ScalarType dtype,
                            at::Device device) {
  const at::Tensor positions = at::arange(0, length, at::TensorOptions().dtype(at::kDouble));  // [T]
  const at::Tensor angles = at::outer(positions, rope_inv_freq(c, rope_dim));                  // [T, d/2]
  const double amplitude = rope_amplitude(c);
  const auto to = at::TensorOptions().dtype(dtype).device(device);
  return {(at::cos(angles) * amplitude).to(to), (at::sin(angles) * amplitude).to(to)};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTables& rope) { return rotary_differentiable(x, rope); }

at::Tensor apply_rope_at(const at::Tensor& x, const RopeTables& rope, const at::Tensor& positions) {
  const int64_t b = x.size(0), t = x.size(-2), half = rope.cos.size(1);
  TANDEM_CHECK(positions.dim() == 2 && positions.size(0) == b && positions.size(1) == t,
               "rotary positions [{}] do not fit x [{}]", fmt::join(positions.sizes(), ", "),
               fmt::join(x.sizes(), ", "));
  const at::Tensor flat = positions.reshape({-1}).to(rope.cos.device());
  // [B, 1, T, d/2]: one table row per token, broadcast over the heads.
  const at::Tensor cos = rope.cos.index_select(0, flat).view({b, 1, t, half});
  const at::Tensor sin = rope.sin.index_select(0, flat).view({b, 1, t, half});
  return rotary_composite(x, cos, sin);
}

at::Tensor apply_rope(const at::Tensor& x, const ForwardContext& ctx) {
  return ctx.positions.defined() ? apply_rope_at(x, ctx.rope, ctx.positions) : apply_rope(x, ctx.rope);
}

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const ForwardContext& ctx) {
  if (!ctx.attn_mask.defined()) return at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, scale);
  return at::scaled_dot_product_attention(q, k, v, ctx.attn_mask, 0.0, /*is_causal=*/false, scale);
}

}  // namespace tandem::model::detail
