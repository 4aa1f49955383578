// The fused MoE kernels against the model's own LibTorch formulation on random inputs:
// routing top-k against route() (model/routing.cpp) with the same expert choices and gate values
// to 1e-6, permute against index_select (bit-exact, every row dtype and odd row sizes), and the
// weighted combine against index_add (1e-6). Then the GPU MoE layer as a whole (kernels plus
// grouped expert GEMMs) against the CPU layer in fp32, its bf16 forward and backward under CUDA's
// sync debug mode (no host synchronisation; also a whole model's micro-batch), and the bf16
// grouped GEMM against fp32 products.
// Skips with the reason without a GPU.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/autocast.h"
#include "model/detail/fused_moe.h"
#include "model/detail/layers.h"
#include "model/detail/moe.h"
#include "model/model.h"
#include "runtime/device.h"
#include "tests/common/gpu_skip.h"

namespace tandem::model::detail {
namespace {

const at::Device kGpu(at::kCUDA, 0);

RoutingOptions options_for(int64_t experts, int64_t groups, int64_t kept_groups, int64_t top_k, bool normalise,
                           double scale) {
  RoutingOptions o;
  o.num_experts = experts;
  o.n_group = groups;
  o.topk_group = kept_groups;
  o.top_k = top_k;
  o.sigmoid = true;
  o.norm_topk_prob = normalise;
  o.routed_scaling_factor = scale;
  return o;
}

TEST(MoeKernels, RoutingTopkMatchesRoute) {
  TANDEM_SKIP_WITHOUT_GPU();
  ASSERT_TRUE(fused_moe_kernels_available());
  // DeepSeek-V3's shape, a plain top-k without groups, one expert per group, no normalisation.
  const std::vector<RoutingOptions> cases = {options_for(256, 8, 4, 8, true, 2.5), options_for(16, 1, 1, 4, true, 1.0),
                                             options_for(64, 8, 3, 6, true, 1.0), options_for(8, 8, 4, 2, false, 1.5),
                                             options_for(96, 4, 2, 5, true, 0.5)};
  at::manual_seed(7);
  for (const RoutingOptions& o : cases) {
    const std::string what =
        fmt::format("E={} G={} topk_group={} K={}", o.num_experts, o.n_group, o.topk_group, o.top_k);
    const at::Tensor logits = at::randn({1000, o.num_experts}, at::kFloat) * 2.0;
    const at::Tensor bias = at::randn({o.num_experts}, at::kFloat) * 0.1;  // changes some choices
    const Routing reference = route(logits, bias, o);                      // on the CPU
    const auto [idx, weight] = routing_topk(reference.scores.to(kGpu), bias.to(kGpu), o);
    ASSERT_TRUE(idx.is_cuda()) << what;
    const at::Tensor idx_host = idx.cpu();
    const int64_t mismatched_tokens = idx_host.ne(reference.topk_idx).any(1).sum().item<int64_t>();
    EXPECT_EQ(mismatched_tokens, 0) << what << ": tokens whose experts differ from route()";
    const double max_error = (weight.cpu() - reference.topk_weight).abs().max().item<double>();
    EXPECT_LE(max_error, 1e-6) << what << ": gate values";
    std::printf("routing %s: %lld/1000 tokens differ, max |gate error| %.3g\n", what.c_str(),
                static_cast<long long>(mismatched_tokens), max_error);
  }
}

TEST(MoeKernels, PermuteIsIndexSelectBitForBit) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::manual_seed(11);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble, at::kByte}) {
    for (int64_t width : {1, 3, 8, 129, 1024}) {  // row sizes down to 1 byte and unaligned widths
      const at::Tensor rows = (at::randn({300, width}) * 50).abs().to(dtype).to(kGpu);  // >= 0: uint8 holds it
      const at::Tensor index = at::randint(0, 300, {1700}, at::TensorOptions().dtype(at::kLong)).to(kGpu);
      const at::Tensor got = permute_tokens(rows, index);
      EXPECT_TRUE(at::equal(got, rows.index_select(0, index))) << c10::toString(dtype) << " width " << width;
    }
  }
}

TEST(MoeKernels, CombineMatchesIndexAdd) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::manual_seed(13);
  constexpr int64_t kTokens = 512, kTopK = 6, kHidden = 200;
  // Every token appears top_k times, in a random (expert-sorted-like) order.
  const at::Tensor index =
      at::arange(kTokens, at::kLong).repeat_interleave(kTopK).index_select(0, at::randperm(kTokens * kTopK, at::kLong));
  const at::Tensor rows = at::randn({kTokens * kTopK, kHidden});
  const at::Tensor gate = at::rand({kTokens * kTopK});
  // The exact sum (float64 of the fp32 products) and the sum of magnitudes: an fp32 sum of K
  // terms in any order is within K * 2^-24 * sum |terms| of it, well inside 1e-6 of that scale.
  const at::Tensor products = (rows * gate.unsqueeze(1)).to(at::kDouble);
  const at::Tensor exact = at::zeros({kTokens, kHidden}, at::kDouble).index_add(0, index, products);
  const at::Tensor magnitude = at::zeros({kTokens, kHidden}, at::kDouble).index_add(0, index, products.abs());
  const at::Tensor got = unpermute_combine(rows.to(kGpu), gate.to(kGpu), index.to(kGpu), kTokens).cpu();
  const double worst = ((got.to(at::kDouble) - exact).abs() / magnitude.clamp_min(1e-30)).max().item<double>();
  EXPECT_LE(worst, 1e-6) << "relative to the sum of magnitudes";
  EXPECT_TRUE(at::allclose(got, exact.to(at::kFloat), 1e-6, 1e-6))
      << "max |error| " << (got.to(at::kDouble) - exact).abs().max().item<double>();
  std::printf("combine fp32: max error / sum|terms| = %.3g\n", worst);

  // Without gates, on bf16 rows into an fp32 result: the fp32 sum of the bf16 values.
  const at::Tensor half_rows = rows.to(at::kBFloat16);
  const at::Tensor plain =
      unpermute_combine(half_rows.to(kGpu), at::Tensor(), index.to(kGpu), kTokens, at::kFloat).cpu();
  const at::Tensor plain_expected = at::zeros({kTokens, kHidden}).index_add(0, index, half_rows.to(at::kFloat));
  EXPECT_EQ(plain.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(plain, plain_expected, 1e-6, 1e-5));
}

// The differentiable forms the MoE layer uses against LibTorch's own autograd through
// index_select / index_add, on `device`: the same output and the same gradients for the token
// rows and the gates.
void expect_reference_gradients(const at::Device& device) {
  at::manual_seed(17);
  constexpr int64_t kTokens = 64, kRows = 64 * 4, kHidden = 24;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor index = at::randint(0, kTokens, {kRows}, at::TensorOptions().dtype(at::kLong)).to(device);
  const at::Tensor probe = at::randn({kTokens, kHidden}, options);
  const auto run = [&](bool fused) {
    const at::Tensor rows =
        at::randn({kTokens, kHidden}, at::TensorOptions().dtype(at::kFloat)).to(device).set_requires_grad(true);
    const at::Tensor gate = at::rand({kRows}, at::TensorOptions().dtype(at::kFloat)).to(device).set_requires_grad(true);
    const at::Tensor permuted = fused ? permute_tokens_differentiable(rows, index) : rows.index_select(0, index);
    const at::Tensor expert_out = permuted * 1.5 + permuted.pow(2) * 0.25;  // a stand-in expert
    const at::Tensor out =
        fused ? unpermute_combine_differentiable(expert_out, gate, index, kTokens, at::kFloat)
              : at::zeros({kTokens, kHidden}, options).index_add(0, index, expert_out * gate.unsqueeze(1));
    (out * probe).sum().backward();
    return std::vector<at::Tensor>{out.detach().cpu(), rows.grad().cpu(), gate.grad().cpu()};
  };
  at::manual_seed(19);
  const std::vector<at::Tensor> fused = run(true);
  at::manual_seed(19);
  const std::vector<at::Tensor> reference = run(false);
  const char* names[] = {"output", "d rows", "d gate"};
  for (size_t i = 0; i < fused.size(); ++i) {
    EXPECT_TRUE(at::allclose(fused[i], reference[i], 1e-5, 1e-5))
        << device << " " << names[i] << ": max |difference| " << (fused[i] - reference[i]).abs().max().item<double>();
  }
}

TEST(MoeKernels, DifferentiableFormsMatchReferenceGradientsOnCpu) { expect_reference_gradients(at::kCPU); }

TEST(MoeKernels, DifferentiableFormsMatchReferenceGradientsOnGpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  expect_reference_gradients(kGpu);
}

// The combine's fused backward in bf16 (the training dtype) against the same products in fp32:
// the row gradients rounded once to bf16, the gate gradients accumulated in fp32.
TEST(MoeKernels, CombineBackwardInBf16MatchesFp32Math) {
  TANDEM_SKIP_WITHOUT_GPU();
  at::manual_seed(23);
  constexpr int64_t kTokens = 96, kRows = 96 * 3, kHidden = 200;
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(kGpu);
  const at::Tensor index = at::randint(0, kTokens, {kRows}, at::TensorOptions().dtype(at::kLong)).to(kGpu);
  const at::Tensor rows = at::randn({kRows, kHidden}, bf16).requires_grad_();
  const at::Tensor gate = at::rand({kRows}, at::TensorOptions().device(kGpu)).requires_grad_();
  const at::Tensor upstream = at::randn({kTokens, kHidden}, bf16);
  unpermute_combine_differentiable(rows, gate, index, kTokens, at::kBFloat16).backward(upstream);
  const at::Tensor g = upstream.to(at::kFloat).index_select(0, index);  // [R, C]
  const at::Tensor expected_rows = g * gate.detach().unsqueeze(1);
  const at::Tensor expected_gate = (g * rows.detach().to(at::kFloat)).sum(1);
  ASSERT_EQ(rows.grad().scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::allclose(rows.grad().to(at::kFloat), expected_rows, 1e-2, 1e-2))
      << "max |difference| " << (rows.grad().to(at::kFloat) - expected_rows).abs().max().item<double>();
  EXPECT_TRUE(at::allclose(gate.grad(), expected_gate, 1e-4, 1e-4))
      << "max |difference| " << (gate.grad() - expected_gate).abs().max().item<double>();
}

// The whole MoE layer on the GPU (fused routing, permute and combine kernels, grouped expert
// GEMMs) against the same layer on the CPU (LibTorch ops, one SwiGLU per expert), fp32.
ModelConfig small_moe_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.moe_intermediate_size = 16;  // multiples of 8: the grouped path takes them
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.validate();
  return c;
}

MoE make_moe(const ModelConfig& c, const at::Device& device) {
  MoE moe(c, 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : moe->parameters()) p.normal_(0.0, 0.3, gen);
    moe->gate->e_score_correction_bias.copy_(at::randn({c.n_routed_experts}, gen) * 0.1);
  }
  moe->to(device);
  moe->move_load_to(device);
  return moe;
}

TEST(MoeKernels, MoeLayerOnGpuMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig c = small_moe_config();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(29);
  const at::Tensor x_values = at::randn({2, 96, c.hidden_size}, gen);
  const at::Tensor probe = at::randn({2, 96, c.hidden_size}, gen);
  auto run = [&](const at::Device& device) {
    MoE moe = make_moe(c, device);
    const at::Tensor x = x_values.to(device).requires_grad_();
    ForwardContext ctx;
    const at::Tensor y = moe->forward(x, ctx);
    (y * probe.to(device)).sum().backward();
    std::vector<at::Tensor> results = {y.detach().cpu(), x.grad().cpu(), moe->load().cpu()};
    for (const auto& p : moe->parameters())
      results.push_back(p.grad().defined() ? p.grad().cpu() : at::zeros_like(p).cpu());
    return results;
  };
  const std::vector<at::Tensor> gpu = run(kGpu);
  const std::vector<at::Tensor> cpu = run(at::kCPU);
  ASSERT_EQ(gpu.size(), cpu.size());
  EXPECT_TRUE(at::equal(gpu[2], cpu[2])) << "expert loads differ: the GPU routed other experts";
  double worst = 0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (i == 2) continue;
    const double scale = std::max(cpu[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (gpu[i] - cpu[i]).abs().max().item<double>() / scale);
  }
  std::printf("MoE layer fp32, GPU vs CPU: max relative difference %.3g over output and %zu gradients\n", worst,
              gpu.size() - 2);
  EXPECT_LT(worst, 1e-5);
}

TEST(MoeKernels, MoeLayerInBf16NeverWaitsForTheHost) {
  TANDEM_SKIP_WITHOUT_GPU();
  // bf16 autocast takes at::_grouped_mm's CUTLASS path; with ep = 1 nothing in the layer's
  // forward or backward may synchronise with the host (CUDA's sync debug mode turns any
  // synchronising copy or .item() into an error).
  const ModelConfig c = small_moe_config();
  MoE moe = make_moe(c, kGpu);
  const at::Tensor x = at::randn({2, 96, c.hidden_size}, at::TensorOptions().device(kGpu)).requires_grad_();
  at::Tensor y;
  auto& sync_mode = c10::cuda::warning_state();
  sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  try {
    ForwardContext ctx;
    {
      const AutocastScope autocast(at::kCUDA, at::kBFloat16);
      y = moe->forward(x, ctx);
    }
    y.to(at::kFloat).sum().backward();
  } catch (const std::exception& error) {
    sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    FAIL() << "the MoE layer synchronised with the host: " << error.what();
  }
  sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  EXPECT_EQ(y.scalar_type(), at::kFloat);  // the token rows' dtype, as on the CPU path
  EXPECT_TRUE(at::isfinite(x.grad()).all().item<bool>());
  for (const auto& p : moe->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), at::kFloat);
  }
  // The routed experts received gradient through the grouped GEMMs.
  EXPECT_GT(moe->experts[0]->as<SwiGLUImpl>()->down_proj->weight.grad().abs().sum().item<double>() +
                moe->experts[1]->as<SwiGLUImpl>()->down_proj->weight.grad().abs().sum().item<double>(),
            0.0);
}

TEST(MoeKernels, ModelMicroBatchNeverWaitsForTheHost) {
  TANDEM_SKIP_WITHOUT_GPU();
  // A whole model (MLA attention, dense and MoE layers, an MTP module, the loss): after a first
  // micro-batch (which builds the cached rotary tables), forward and backward of the next one in
  // bf16 issue no host synchronisation, so the CPU can run ahead of the GPU for a whole step.
  ModelConfig c;  // the small defaults: 320 tokens, width 256, 8 experts
  c.num_hidden_layers = 2;
  c.validate();
  Model model(c, 5);
  model.to(kGpu);
  model.train(true);
  const at::Tensor tokens = at::randint(0, c.vocab_size, {2, 65}, at::TensorOptions().dtype(at::kLong)).to(kGpu);
  auto micro_batch = [&] {
    LossPieces pieces;
    {
      const AutocastScope autocast(at::kCUDA, at::kBFloat16);
      pieces = model.forward_loss(tokens);
    }
    pieces.loss.backward();
    return pieces.loss.detach();
  };
  micro_batch();
  auto& sync_mode = c10::cuda::warning_state();
  sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR);
  at::Tensor loss;
  try {
    loss = micro_batch();
  } catch (const std::exception& error) {
    sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
    FAIL() << "a micro-batch synchronised with the host: " << error.what();
  }
  sync_mode.set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
}

TEST(MoeKernels, GroupedLinearBf16MatchesPerGroupFp32) {
  TANDEM_SKIP_WITHOUT_GPU();
  // The CUTLASS grouped GEMM (bf16, Hopper) against fp32 per-group products of the same bf16
  // values, with an empty group; output and weight gradients to bf16 accuracy.
  constexpr int64_t kIn = 256, kOut = 128;
  const std::vector<int64_t> rows = {300, 0, 129, 77};
  std::vector<int32_t> ends;
  int64_t total = 0;
  for (int64_t r : rows) ends.push_back(static_cast<int32_t>(total += r));
  const at::Tensor offsets = at::tensor(ends, at::TensorOptions().dtype(at::kInt)).to(kGpu);
  at::manual_seed(31);
  const at::Tensor x = at::randn({total, kIn}).to(at::kBFloat16);
  std::vector<at::Tensor> weights;
  for (size_t g = 0; g < rows.size(); ++g) {
    weights.push_back((at::randn({kOut, kIn}) * 0.05).to(at::kBFloat16).to(kGpu).requires_grad_());
  }
  const at::Tensor y = grouped_split_linear(x.to(kGpu), weights, offsets, nullptr);  // [R, out]
  y.to(at::kFloat).pow(2).sum().backward();
  int64_t offset = 0;
  double worst_out = 0, worst_grad = 0;
  for (size_t g = 0; g < rows.size(); ++g) {
    const at::Tensor xg = x.narrow(0, offset, rows[g]).to(at::kFloat);
    const at::Tensor wg = weights[g].detach().cpu().to(at::kFloat);
    const at::Tensor yg = xg.mm(wg.t());
    const at::Tensor got = y.narrow(0, offset, rows[g]).detach().cpu().to(at::kFloat);
    const at::Tensor grad = weights[g].grad().cpu().to(at::kFloat);
    const at::Tensor expected_grad = (2 * got).t().mm(xg);  // d/dW of sum(y^2) with the bf16 y
    if (rows[g] > 0) worst_out = std::max(worst_out, ((got - yg).abs().max() / yg.abs().max()).item<double>());
    if (rows[g] == 0) {
      EXPECT_EQ(grad.abs().max().item<double>(), 0.0) << "an empty group's gradient must be exactly zero";
    } else {
      worst_grad =
          std::max(worst_grad, ((grad - expected_grad).abs().max() / expected_grad.abs().max()).item<double>());
    }
    offset += rows[g];
  }
  std::printf("grouped GEMM bf16: output rel error %.3g, weight-gradient rel error %.3g\n", worst_out, worst_grad);
  EXPECT_LT(worst_out, 1e-2);
  EXPECT_LT(worst_grad, 2e-2);
}

TEST(MoeKernels, ReferencePathOnCpuIsTheModelMath) {
  // No GPU needed: CPU tensors take the reference, which must be route()'s selection and gates.
  const RoutingOptions o = options_for(32, 4, 2, 4, true, 2.0);
  const at::Tensor logits = at::randn({50, 32});
  const at::Tensor bias = at::randn({32}) * 0.1;
  const Routing reference = route(logits, bias, o);
  const auto [idx, weight] = routing_topk(reference.scores, bias, o);
  EXPECT_TRUE(at::equal(idx, reference.topk_idx));
  EXPECT_TRUE(at::allclose(weight, reference.topk_weight));
  const at::Tensor rows = at::randn({50, 7});
  const at::Tensor index = at::randint(0, 50, {120}, at::TensorOptions().dtype(at::kLong));
  EXPECT_TRUE(at::equal(permute_tokens(rows, index), rows.index_select(0, index)));
}

}  // namespace
}  // namespace tandem::model::detail
