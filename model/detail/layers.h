// Internal building blocks (model .cpp files and tests only; public headers never include
// this): the per-forward context, the split-capable linear layer, its tensor-parallel forms,
// RMSNorm, SwiGLU, the (vocab-parallel) embedding and rotary embedding with YaRN. Parameters are
// created uninitialized with their LOCAL shapes; Stage::Impl fills every one by its HF name from
// the full tensor (init.h, sharding.h), so construction order does not matter.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "model/model_config.h"
#include "model/parallel_groups.h"
#include "model/weight_grad_queue.h"
#include "parallel/overlap_hook.h"

namespace tandem::model::detail {

// Rotary tables for positions 0..T-1: cos/sin [T, rope_dim / 2] in the activation dtype.
struct RopeTables {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor prefix(int64_t length, bool want_cos) const { return (want_cos ? cos : sin).narrow(0, 0, length); }
};

struct KvCache;  // model/detail/kv_cache.h

// What every layer's forward needs besides its input, set up once per stage forward.
struct ForwardContext {
  RopeTables rope;  // for the longest sequence of this forward
  // Rows that are not one sequence starting at position 0 (packed samples, decoding after a
  // cache): each input token's rotary position [B, T] int64 and the keys each query may see
  // [B, 1, T, S] bool (S = T, or the cache length when decoding). Undefined: positions 0..T-1
  // and plain causal attention, the training fast path.
  at::Tensor positions;
  at::Tensor attn_mask;
  // Decoding: the attention layers read and extend this cache instead of attending to their
  // input alone (model/detail/kv_cache.h). Null in training.
  KvCache* kv_cache = nullptr;
  std::shared_ptr<WeightGradQueue> queue;  // where split layers defer W (may be null)
  double loss_scale = 1.0;                 // scale of the injected balance-loss gradient
  at::Tensor aux_loss;                     // [] running sum of balance losses (detached), out
  // Tensor/expert parallelism of this forward (null = size 1). With sequence_parallel, the
  // activations between tensor-parallel regions are [B, T/tp, C] (this rank's sequence slice);
  // otherwise [B, T, C] replicated over tp. MTP modules run with sequence_parallel off.
  parallel::CommunicatorPtr tp;
  parallel::CommunicatorPtr ep;
  bool sequence_parallel = false;
  // Called at the MoE layer's dispatch and combine, forward and backward, while the exchange is
  // in flight (an overlapping executor runs another micro-batch there); null when not overlapped.
  parallel::OverlapHookPtr overlap;
  // Activation recomputation (model/recompute.h): selective recomputes every layer's attention
  // inputs in backward; `recomputing` is true while a piece runs again there, when a layer must
  // not repeat its side effects (expert load counts, the logged balance loss, last_routing).
  bool recompute_attention_inputs = false;
  bool recomputing = false;
  int64_t tp_size() const { return tp ? tp->size() : 1; }
};

// y = x W^T whose backward can leave dW in `queue` (see weight_grad_queue.h). With the queue
// null or not deferring, dW is returned to autograd like any linear. x [..., in], W [out, in].
at::Tensor split_linear(const at::Tensor& input, const at::Tensor& weight,
                        const std::shared_ptr<WeightGradQueue>& queue);

// Routed experts' linear as one grouped GEMM: rows of `input` come in G contiguous groups, group
// g ending at row offsets[g] (int32 [G] on input's device, non-decreasing, the last = R), and
// group g is multiplied by weights[g]^T. Same B/W split and autocast behaviour as split_linear.
// input [R, in], weights G x [out, in] (leaves) -> [R, out]. No host synchronisation on a GPU in
// bf16 (the fp32 path of at::_grouped_mm reads the offsets on the host).
at::Tensor grouped_split_linear(const at::Tensor& input, at::TensorList weights, const at::Tensor& offsets,
                                const std::shared_ptr<WeightGradQueue>& queue);
// Whether grouped_split_linear takes these widths (multiples of 8: 16-byte rows in bf16).
bool grouped_linear_supported(int64_t in_features, int64_t out_features);

// Into a tensor-parallel region: the full-sequence, replicated input of column-parallel layers,
// whose gradients are partial over tp. Sequence parallel: all-gather along T (backward
// reduce-scatter); else copy_to_tp (backward all-reduce). Identity when tp = 1. x [B, T(/tp), C].
at::Tensor enter_tp_region(const at::Tensor& x, const ForwardContext& ctx);
// Out of a tensor-parallel region: sums the partial outputs of row-parallel layers. Sequence
// parallel: reduce-scatter along T; else all-reduce. Identity when tp = 1. [B, T, C] partial.
at::Tensor leave_tp_region(const at::Tensor& partial, const ForwardContext& ctx);
// x W_shard^T with W's rows (output features) split over tp: enter_tp_region then split_linear.
// x [B, T(/tp), in] -> [B, T, out/tp]. Keeps the B/W split (W_shard is the leaf).
at::Tensor column_parallel_linear(const at::Tensor& x, const at::Tensor& weight_shard, ForwardContext& ctx);
// h W_shard^T with W's columns (input features) split over tp, h already split the same way:
// split_linear then leave_tp_region. h [B, T, in/tp] -> [B, T(/tp), out].
at::Tensor row_parallel_linear(const at::Tensor& h, const at::Tensor& weight_shard, ForwardContext& ctx);

class SplitLinearImpl : public torch::nn::Module {
 public:
  SplitLinearImpl(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& input, ForwardContext& ctx);  // [..., in] -> [..., out]
  at::Tensor weight;                                                 // [out, in]
};
TORCH_MODULE(SplitLinear);

// x * rsqrt(mean(x^2) + eps) * w, the statistics in at least fp32.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) { return rms_norm(x, weight, eps_); }  // [..., d]
  at::Tensor weight;                                                             // [d]
 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// down(silu(gate(x)) * up(x)), no biases: the dense MLP, every expert and the shared experts.
// `width` is the local width (full width / tp for the tensor-parallel dense MLP and shared
// experts; routed experts are never split).
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t width);
  at::Tensor forward(const at::Tensor& x, ForwardContext& ctx);  // [..., d] -> [..., d]
  // Tensor-parallel form (gate/up column-parallel, down row-parallel):
  // leave_tp_region(forward(enter_tp_region(x))). x [B, T(/tp), d] -> [B, T(/tp), d].
  at::Tensor forward_parallel(const at::Tensor& x, ForwardContext& ctx);
  SplitLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGLU);

// Token embedding (HF embed_tokens), vocab-parallel over tp: this rank holds rows
// [vocab_start, vocab_start + V/tp). ids [...] int64 -> [..., C].
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab_size, int64_t dim, int64_t tp_size = 1, int64_t tp_rank = 0);
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }  // single process
  // ids [B, T] -> [B, T, C] replicated over ctx.tp, or [B, T/tp, C] under sequence parallelism
  // when `sequence_parallel` (the caller decides: MTP lookups are never sequence-parallel).
  at::Tensor forward(const at::Tensor& ids, const ForwardContext& ctx, bool sequence_parallel);
  int64_t vocab_start() const { return vocab_start_; }
  at::Tensor weight;  // [V/tp, C]

 private:
  int64_t vocab_start_ = 0;
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
// The same rotation at explicit positions: x [B, H, T, d], positions [B, T] int64 below the
// tables' length. The composite path (packed rows and decoding are not the hot training loop).
at::Tensor apply_rope_at(const at::Tensor& x, const RopeTables& rope, const at::Tensor& positions);
// apply_rope_at with ctx.positions when set, else apply_rope.
at::Tensor apply_rope(const at::Tensor& x, const ForwardContext& ctx);
// Causal SDPA over q/k/v [B, H, T|S, d] honouring ctx.attn_mask when set.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                            const ForwardContext& ctx);

}  // namespace tandem::model::detail
