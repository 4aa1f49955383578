// Adapters from tensors to the fused dense-block kernels (model/kernels/dense_kernels.h) with
// their autograd, and the composite LibTorch reference for everything else. See
// detail/fused_dense.h.
#include "model/detail/fused_dense.h"

#include <torch/torch.h>

#include "model/detail/layers.h"
#include "runtime/error.h"

#ifdef TANDEM_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "model/detail/kernel_launch.h"
#include "model/kernels/dense_kernels.h"
#endif

namespace tandem::model::detail {
namespace {

#ifdef TANDEM_HAVE_CUDA
// x [..., T, d] on the GPU, tables fp32 [>= T, d/2] -> rotated, in x's dtype and layout. A
// heads-first view of [B, T, H, d] memory (what attention's q/k are) is rotated where it lies
// (the kernel maps rows to positions through `heads`): no contiguous copy either way.
at::Tensor rotary_kernel(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, bool inverse) {
  const c10::cuda::CUDAGuard guard(x.device());
  kernels::RowType type{};
  TANDEM_CHECK(kernel_row_type(x, type), "rotary kernel: unsupported dtype {}", c10::toString(x.scalar_type()));
  const int64_t positions = x.size(-2);
  const int64_t width = x.size(-1);
  const bool tokens_major = x.dim() >= 3 && !x.is_contiguous() && x.transpose(-3, -2).is_contiguous();
  const at::Tensor in = tokens_major ? x.transpose(-3, -2) : x.contiguous();  // memory order
  const int64_t heads = tokens_major ? x.size(-3) : 1;
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  const int64_t rows = width == 0 ? 0 : in.numel() / width;
  TANDEM_KERNEL_CHECK(kernels::launch_rotary(in.data_ptr(), out.data_ptr(), type, cos.data_ptr<float>(),
                                             sin.data_ptr<float>(), rows, positions, heads, width, inverse,
                                             current_stream(in)),
                      "kernels::launch_rotary");
  return tokens_major ? out.transpose(-3, -2) : out;
}

struct RotaryFunction : torch::autograd::Function<RotaryFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotary_kernel(x, cos, sin, /*inverse=*/false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // A rotation's transpose is the rotation by the negated angle.
    const auto saved = ctx->get_saved_variables();
    return {rotary_kernel(grads[0], saved[0], saved[1], /*inverse=*/true), at::Tensor(), at::Tensor()};
  }
};

struct SwiGLUGateFunction : torch::autograd::Function<SwiGLUGateFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const c10::cuda::CUDAGuard guard(gate.device());
    const at::Tensor g = gate.contiguous();
    const at::Tensor u = up.contiguous();
    kernels::RowType type{};
    TANDEM_CHECK(kernel_row_type(g, type), "swiglu kernel: unsupported dtype {}", c10::toString(g.scalar_type()));
    at::Tensor out = at::empty_like(g);
    TANDEM_KERNEL_CHECK(
        kernels::launch_swiglu_forward(g.data_ptr(), u.data_ptr(), out.data_ptr(), type, g.numel(), current_stream(g)),
        "kernels::launch_swiglu_forward");
    ctx->save_for_backward({g, u});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = saved[0];
    const at::Tensor& u = saved[1];
    const c10::cuda::CUDAGuard guard(g.device());
    const at::Tensor d_out = grads[0].to(g.scalar_type()).contiguous();
    at::Tensor d_gate = at::empty_like(g);
    at::Tensor d_up = at::empty_like(u);
    kernels::RowType type{};
    TANDEM_CHECK(kernel_row_type(g, type), "swiglu kernel: unsupported dtype {}", c10::toString(g.scalar_type()));
    TANDEM_KERNEL_CHECK(kernels::launch_swiglu_backward(g.data_ptr(), u.data_ptr(), d_out.data_ptr(), d_gate.data_ptr(),
                                                        d_up.data_ptr(), type, g.numel(), current_stream(g)),
                        "kernels::launch_swiglu_backward");
    return {d_gate, d_up};
  }
};

bool kernel_dtype(const at::Tensor& t) {
  kernels::RowType type{};
  return kernel_row_type(t, type);
}
#endif

}  // namespace

at::Tensor rotary_composite(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  std::vector<int64_t> pair_shape = x.sizes().vec();
  pair_shape.back() = x.size(-1) / 2;
  pair_shape.push_back(2);
  const at::Tensor pairs = x.reshape(pair_shape);  // [..., T, d/2, 2]
  const at::Tensor even = pairs.select(-1, 0);     // [..., T, d/2]
  const at::Tensor odd = pairs.select(-1, 1);
  const at::Tensor rotated = at::stack({even * cos - odd * sin, even * sin + odd * cos}, -1);  // [..., T, d/2, 2]
  return rotated.flatten(-2);                                                                  // [..., T, d]
}

at::Tensor rotary_differentiable(const at::Tensor& x, const RopeTables& rope) {
  const int64_t t = x.size(-2);
  const int64_t d = x.size(-1);
  TANDEM_CHECK(rope.cos.size(0) >= t && rope.cos.size(1) * 2 == d, "rotary tables [{}, {}] do not fit x [..., {}, {}]",
               rope.cos.size(0), rope.cos.size(1), t, d);
#ifdef TANDEM_HAVE_CUDA
  if (x.is_cuda() && kernel_dtype(x)) {
    // The kernel reads fp32 tables; bf16 tables would already have lost the phase at long positions.
    const at::Tensor cos = rope.cos.narrow(0, 0, t).to(at::kFloat).contiguous();  // [T, d/2]
    const at::Tensor sin = rope.sin.narrow(0, 0, t).to(at::kFloat).contiguous();
    return RotaryFunction::apply(x, cos, sin);
  }
#endif
  return rotary_composite(x, rope.cos.narrow(0, 0, t), rope.sin.narrow(0, 0, t));
}

at::Tensor swiglu_gate_differentiable(const at::Tensor& gate, const at::Tensor& up) {
  TANDEM_CHECK(gate.sizes() == up.sizes(), "swiglu: gate [{}] and up [{}] differ", fmt::join(gate.sizes(), ", "),
               fmt::join(up.sizes(), ", "));
#ifdef TANDEM_HAVE_CUDA
  if (gate.is_cuda() && gate.scalar_type() == up.scalar_type() && kernel_dtype(gate)) {
    return SwiGLUGateFunction::apply(gate, up);
  }
#endif
  return at::silu(gate) * up;
}

at::Tensor rms_norm_fused_or_composite(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // LibTorch's fused RMSNorm (forward and backward kernels on CUDA) computes in the input's type
  // with fp32 statistics; taken when x and weight share fp32, the type the composite computes in.
  if (x.is_cuda() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat) {
    return at::rms_norm(x, {x.size(-1)}, weight, eps);
  }
  const at::ScalarType compute = at::promote_types(x.scalar_type(), at::kFloat);
  const at::Tensor xf = x.to(compute);                                   // [..., d]
  const at::Tensor inv_rms = at::rsqrt(xf.pow(2).mean(-1, true) + eps);  // [..., 1]
  return (xf * inv_rms).to(x.scalar_type()) * weight;
}

}  // namespace tandem::model::detail
