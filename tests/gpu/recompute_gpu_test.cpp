// Activation recomputation on the GPU under bf16 autocast: the recomputed forward runs in
// backward on the autograd engine's device thread, where autocast is off unless the recompute
// node restores it. Selective and full recomputation must give the losses and gradients of no
// recomputation to bf16 accuracy (atomics in the expert scatter may reorder sums; a recomputed
// forward without autocast would differ far more), and must use less memory: the peak of a forward + backward
// drops by at least a quarter under full recomputation. Skips with the reason without a GPU.
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include "model/autocast.h"
#include "model/model.h"
#include "tests/common/gpu_skip.h"

namespace tandem::model {
namespace {

const at::Device kGpu(at::kCUDA, 0);

ModelConfig bench_like_config() {
  ModelConfig c;  // a small DeepSeek-V3-style model: MLA, shared + routed experts, one MTP module
  c.vocab_size = 4096;
  c.hidden_size = 512;
  c.num_hidden_layers = 4;
  c.intermediate_size = 1024;
  c.moe_intermediate_size = 256;
  c.num_attention_heads = 8;
  c.attention_type = AttentionType::kMla;
  c.q_lora_rank = 256;
  c.kv_lora_rank = 128;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 4;
  c.first_k_dense_replace = 1;
  c.num_nextn_predict_layers = 1;
  c.aux_loss_alpha = 1e-4;
  c.initializer_range = 0.02;
  c.validate();
  return c;
}

struct GpuStep {
  double loss = 0;
  double peak_gib = 0;
  std::map<std::string, at::Tensor> grads;
};

GpuStep bf16_step(const RecomputePolicy& policy, const at::Tensor& tokens) {
  Model model(bench_like_config(), 5);
  model.whole().set_recompute(policy);
  model.to(kGpu);
  model.train(true);
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  const double before =
      static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].current);
  LossPieces losses;
  {
    const AutocastScope autocast(at::kCUDA, at::kBFloat16);
    losses = model.forward_loss(tokens);
  }
  losses.loss.backward();
  GpuStep r;
  r.loss = losses.loss.item<double>();
  r.peak_gib =
      (static_cast<double>(c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak) - before) /
      1073741824.0;
  for (auto& [name, p] : model.named_parameters()) {
    if (p.grad().defined()) r.grads[name] = p.grad().cpu();
  }
  return r;
}

TEST(RecomputeGpu, Bf16SelectiveAndFullMatchNoneWithLessMemory) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor tokens =
      at::randint(4096, {4, 1025}, gen, at::TensorOptions().dtype(at::kLong)).to(kGpu);  // [B, T+1]
  const GpuStep none = bf16_step({}, tokens);
  std::printf("[recompute_gpu] none: loss %.6f, forward+backward peak %.3f GiB above the weights\n", none.loss,
              none.peak_gib);
  for (const auto& [name, policy] : {std::pair<std::string, RecomputePolicy>{"selective", {RecomputeMode::kSelective}},
                                     std::pair<std::string, RecomputePolicy>{"full", {RecomputeMode::kFull}}}) {
    const GpuStep again = bf16_step(policy, tokens);
    EXPECT_NEAR(again.loss, none.loss, 1e-4 * std::abs(none.loss)) << name;  // forward atomics may reorder sums
    double worst = 0;
    for (const auto& [param, g] : none.grads) {
      ASSERT_TRUE(again.grads.count(param)) << name << ": " << param;
      const double scale = std::max(g.abs().max().item<double>(), 1e-12);
      worst = std::max(worst, (again.grads.at(param) - g).abs().max().item<double>() / scale);
    }
    // bf16 products summed in another order by atomics differ in the last bits; a forward
    // recomputed without autocast (fp32 q/k/v) would differ by far more.
    EXPECT_LT(worst, 2e-2) << name;
    std::printf(
        "[recompute_gpu] %s: loss %.6f, worst relative gradient difference %.2e, peak %.3f GiB (%.0f%% of none)\n",
        name.c_str(), again.loss, worst, again.peak_gib, 100.0 * again.peak_gib / none.peak_gib);
    EXPECT_LT(again.peak_gib, none.peak_gib) << name;
    if (name == "full") EXPECT_LT(again.peak_gib, 0.75 * none.peak_gib);
  }
}

}  // namespace
}  // namespace tandem::model
