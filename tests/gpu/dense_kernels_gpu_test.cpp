// The fused dense-block paths on the GPU (model/detail/fused_dense.h: rotary and SwiGLU kernels,
// LibTorch's fused RMSNorm; model/split_linear.cpp: weight gradients written as fp32 by the GEMM)
// against the composite LibTorch math on the CPU in fp32, forward and backward. In bf16 they are
// held to the type's rounding against the composite on the same inputs. Skips without a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "model/autocast.h"
#include "model/detail/fused_dense.h"
#include "model/detail/layers.h"
#include "model/model_config.h"
#include "runtime/device.h"
#include "tests/common/gpu_skip.h"

namespace tandem::model::detail {
namespace {

const at::Device kGpu(at::kCUDA, 0);

double max_relative(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kCPU, at::kDouble);
  const at::Tensor w = want.to(at::kCPU, at::kDouble);
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

// f's output and the gradients of its inputs for one random output gradient, on `device`/`dtype`.
template <typename F>
std::vector<at::Tensor> value_and_grads(F f, const std::vector<at::Tensor>& inputs, const at::Tensor& grad_out,
                                        at::Device device, at::ScalarType dtype) {
  std::vector<at::Tensor> leaves;
  for (const at::Tensor& t : inputs) leaves.push_back(t.to(device, dtype).detach().requires_grad_(true));
  const at::Tensor out = f(leaves);
  out.backward(grad_out.to(device, out.scalar_type()));
  std::vector<at::Tensor> result{out.detach()};
  for (const at::Tensor& leaf : leaves) result.push_back(leaf.grad());
  return result;
}

ModelConfig rope_config() {
  ModelConfig c;
  c.rope_theta = 10000.0;
  return c;
}

TEST(DenseKernels, RotaryMatchesCompositeForwardAndBackward) {
  TANDEM_SKIP_WITHOUT_GPU();
  const ModelConfig c = rope_config();
  const int64_t t = 37, d = 64;
  const at::Tensor x = at::randn({2, 3, t, d}, at::kDouble);
  const at::Tensor grad = at::randn({2, 3, t, d}, at::kDouble);
  auto rotate_on = [&](at::Device device) {
    const RopeTables rope = make_rope_tables(c, d, t + 5, at::kFloat, device);  // longer tables than x
    return [rope](const std::vector<at::Tensor>& in) { return apply_rope(in[0], rope); };
  };
  const auto want = value_and_grads(rotate_on(at::kCPU), {x}, grad, at::kCPU, at::kFloat);
  const auto got = value_and_grads(rotate_on(kGpu), {x}, grad, kGpu, at::kFloat);
  EXPECT_LT(max_relative(got[0], want[0]), 1e-6);
  EXPECT_LT(max_relative(got[1], want[1]), 1e-6);
  // bf16 input: one rounding of the fp32 rotation.
  const auto got16 = value_and_grads(rotate_on(kGpu), {x}, grad, kGpu, at::kBFloat16);
  EXPECT_EQ(got16[0].scalar_type(), at::kBFloat16);
  EXPECT_LT(max_relative(got16[0], want[0]), 1e-2);
  EXPECT_LT(max_relative(got16[1], want[1]), 1e-2);
  // A non-contiguous input (heads-first view of [B, T, H, d], as attention makes it).
  const at::Tensor strided = at::randn({2, t, 3, d}, at::kFloat).to(kGpu).transpose(1, 2);
  const RopeTables rope = make_rope_tables(c, d, t, at::kFloat, kGpu);
  EXPECT_LT(max_relative(apply_rope(strided, rope),
                         apply_rope(strided.cpu(), make_rope_tables(c, d, t, at::kFloat, at::kCPU))),
            1e-6);
  // Widths whose pair count is not a multiple of 4 take the one-pair-per-thread path.
  for (const int64_t narrow : {int64_t{6}, int64_t{10}}) {
    const at::Tensor small = at::randn({2, 3, t, narrow}, at::kFloat);
    const at::Tensor on_gpu = apply_rope(small.to(kGpu), make_rope_tables(c, narrow, t, at::kFloat, kGpu));
    const at::Tensor on_cpu = apply_rope(small, make_rope_tables(c, narrow, t, at::kFloat, at::kCPU));
    EXPECT_LT(max_relative(on_gpu, on_cpu), 1e-6) << "width " << narrow;
  }
}

TEST(DenseKernels, SwiGLUGateMatchesCompositeForwardAndBackward) {
  TANDEM_SKIP_WITHOUT_GPU();
  // 4 x 999: not a multiple of the 16-byte vector, so the element-wise path runs too (below).
  const at::Tensor gate = 3 * at::randn({4, 1000}, at::kDouble);
  const at::Tensor up = at::randn({4, 1000}, at::kDouble);
  const at::Tensor grad = at::randn({4, 1000}, at::kDouble);
  {
    const at::Tensor g = gate.narrow(1, 0, 999).contiguous(), u = up.narrow(1, 0, 999).contiguous();
    const at::Tensor fused = swiglu_gate_differentiable(g.to(kGpu, at::kBFloat16), u.to(kGpu, at::kBFloat16));
    const at::Tensor composite = at::silu(g.to(kGpu, at::kBFloat16)) * u.to(kGpu, at::kBFloat16);
    EXPECT_LT(max_relative(fused, composite), 1e-2);
  }
  auto fused = [](const std::vector<at::Tensor>& in) { return swiglu_gate_differentiable(in[0], in[1]); };
  auto composite = [](const std::vector<at::Tensor>& in) { return at::silu(in[0]) * in[1]; };
  const auto want = value_and_grads(composite, {gate, up}, grad, at::kCPU, at::kFloat);
  const auto got = value_and_grads(fused, {gate, up}, grad, kGpu, at::kFloat);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_LT(max_relative(got[i], want[i]), 1e-6) << "output/grad " << i;
  // bf16: the fused kernel rounds where the composite stores bf16 intermediates.
  const auto want16 = value_and_grads(composite, {gate, up}, grad, kGpu, at::kBFloat16);
  const auto got16 = value_and_grads(fused, {gate, up}, grad, kGpu, at::kBFloat16);
  for (size_t i = 0; i < want16.size(); ++i) {
    EXPECT_EQ(got16[i].scalar_type(), at::kBFloat16);
    EXPECT_LT(max_relative(got16[i], want16[i]), 1e-2) << "bf16 output/grad " << i;
  }
}

TEST(DenseKernels, RmsNormOnGpuMatchesCompositeForwardAndBackward) {
  TANDEM_SKIP_WITHOUT_GPU();
  const at::Tensor x = at::randn({3, 5, 256}, at::kDouble);
  const at::Tensor weight = 1 + 0.1 * at::randn({256}, at::kDouble);
  const at::Tensor grad = at::randn({3, 5, 256}, at::kDouble);
  auto norm = [](const std::vector<at::Tensor>& in) { return rms_norm(in[0], in[1], 1e-6); };
  const auto want = value_and_grads(norm, {x, weight}, grad, at::kCPU, at::kFloat);
  const auto got = value_and_grads(norm, {x, weight}, grad, kGpu, at::kFloat);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_LT(max_relative(got[i], want[i]), 1e-5) << "output/grad " << i;
  // Under bf16 autocast the output is cast once, to bf16 (fp32 statistics, then one rounding).
  const AutocastScope autocast(at::kCUDA, at::kBFloat16);
  const at::Tensor cast = rms_norm(x.to(kGpu, at::kFloat), weight.to(kGpu, at::kFloat), 1e-6);
  EXPECT_EQ(cast.scalar_type(), at::kBFloat16);
  EXPECT_LT(max_relative(cast, want[0]), 4e-3);  // one bf16 rounding: at most 2^-8 relative
}

TEST(DenseKernels, Bf16LinearWritesAnFp32WeightGradientWithoutBf16Rounding) {
  TANDEM_SKIP_WITHOUT_GPU();
  const at::Tensor x = at::randn({64, 96}, at::kFloat).to(kGpu);
  const at::Tensor w = at::randn({48, 96}, at::kFloat).to(kGpu).requires_grad_(true);
  const at::Tensor grad = at::randn({64, 48}, at::kFloat).to(kGpu);
  {
    const AutocastScope autocast(at::kCUDA, at::kBFloat16);
    const at::Tensor y = split_linear(x, w, nullptr);
    y.backward(grad.to(y.scalar_type()));
  }
  ASSERT_EQ(w.grad().scalar_type(), at::kFloat);
  // The exact product of the bf16 operands, accumulated in fp64.
  const at::Tensor dy = grad.to(at::kBFloat16).to(at::kDouble);
  const at::Tensor xb = x.to(at::kBFloat16).to(at::kDouble);
  const at::Tensor want = dy.t().mm(xb);
  // fp32 accumulation in the GEMM: far tighter than a bf16-rounded result (~4e-3) would be.
  EXPECT_LT(max_relative(w.grad(), want), 1e-5);
}

}  // namespace
}  // namespace tandem::model::detail
