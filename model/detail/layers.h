// Internal building blocks (model .cpp files and tests only; public headers never include
// this): the per-forward context, the split-capable linear layer, RMSNorm, SwiGLU and rotary
// embedding with YaRN. Parameters are created uninitialized; Stage::Impl fills every one by
// its HF name (init.h), so construction order does not matter.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "model/model_config.h"
#include "model/weight_grad_queue.h"

namespace tandem::model::detail {

// Rotary tables for positions 0..T-1: cos/sin [T, rope_dim / 2] in the activation dtype.
struct RopeTables {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor prefix(int64_t length, bool want_cos) const {
    return (want_cos ? cos : sin).narrow(0, 0, length);
  }
};

// What every layer's forward needs besides its input, set up once per stage forward.
struct ForwardContext {
  RopeTables rope;                         // for the longest sequence of this forward
  std::shared_ptr<WeightGradQueue> queue;  // where split layers defer W (may be null)
  double loss_scale = 1.0;                 // scale of the injected balance-loss gradient
  at::Tensor aux_loss;                     // [] running sum of balance losses (detached), out
};

// y = x W^T whose backward can leave dW in `queue` (see weight_grad_queue.h). With the queue
// null or not deferring, dW is returned to autograd like any linear. x [..., in], W [out, in].
at::Tensor split_linear(const at::Tensor& input, const at::Tensor& weight,
                        const std::shared_ptr<WeightGradQueue>& queue);

class SplitLinearImpl : public torch::nn::Module {
 public:
  SplitLinearImpl(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& input, ForwardContext& ctx);  // [..., in] -> [..., out]
  at::Tensor weight;  // [out, in]
};
TORCH_MODULE(SplitLinear);

// x * rsqrt(mean(x^2) + eps) * w, the statistics in at least fp32.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) { return rms_norm(x, weight, eps_); }  // [..., d]
  at::Tensor weight;  // [d]
 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// down(silu(gate(x)) * up(x)), no biases: the dense MLP, every expert and the shared experts.
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t width);
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // [..., d] -> [..., d]
  SplitLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGLU);

// Token embedding (HF embed_tokens): ids [...] int64 -> [..., C].
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab_size, int64_t dim);
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }
  at::Tensor weight;  // [V, C]
};
TORCH_MODULE(TokenEmbedding);

// Rotary frequencies of width `rope_dim` (theta^(-2i/d), YaRN-adjusted when configured) as
// float64 [rope_dim / 2]; the YaRN ramp is linear in the frequency index between the
// correction dimensions of beta_fast (floored) and beta_slow (ceiled), as in the YaRN paper's
// reference implementation that DeepSeek's checkpoints were trained with.
at::Tensor rope_inv_freq(const ModelConfig& config, int64_t rope_dim);
// Amplitude on cos/sin under YaRN: mscale(factor, mscale) / mscale(factor, mscale_all_dim),
// with mscale(s, m) = 0.1 m ln(s) + 1 for s > 1, else 1 (1.0 for DeepSeek-V3's config).
double rope_amplitude(const ModelConfig& config);
// Softmax scale of attention: head_dim^-0.5 times mscale(factor, mscale_all_dim)^2 under YaRN.
double attention_softmax_scale(const ModelConfig& config, int64_t qk_head_dim);
RopeTables make_rope_tables(const ModelConfig& config, int64_t rope_dim, int64_t length, at::ScalarType dtype,
                            at::Device device);
// Rotates consecutive pairs (x[2i], x[2i+1]) by angle pos * inv_freq[i] (the interleaved
// layout of DeepSeek's checkpoints). x [B, H, T, d], tables for positions 0..T-1.
at::Tensor apply_rope(const at::Tensor& x, const RopeTables& rope);

}  // namespace tandem::model::detail
