// The per-element AdamW update of parallel/adamw.h, written once for the fused CUDA kernel
// (adamw_kernels.cu) and for host code, so a CPU unit test can hold this exact sequence of fp32
// operations against the LibTorch composite (adamw.cpp) without a GPU. Torch-free.
// The order mirrors the composite op by op, each with its own fp32 rounding, because the fused
// step must follow the CPU path to ~1e-6 over many steps:
//   grad * s (clip scale);  exp_avg.mul_(b1).add_(g, 1 - b1);  exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2);
//   decayed: p.add_(p, -lr * wd);  p.addcdiv_(m, (v / bias2).sqrt_().add_(eps), -lr / bias1).
// ATen's (AVX2) CPU kernels compute add_ with alpha as fmadd(other, alpha, self) and addcmul as
// fmadd(value * t1, t2, self), addcdiv as self + value * t1 / t2, division as a true division;
// the fmaf calls below are those fused multiply-adds. The one op that cannot be mirrored is
// ATen's vectorised sqrt, which is not correctly rounded (sqrtf is): parameters may differ by an
// ulp of the update, moments are bit-identical (tests/unit/parallel/adamw_test.cpp measures it).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define TANDEM_HOST_DEVICE __host__ __device__
#else
#define TANDEM_HOST_DEVICE
#endif

namespace tandem::parallel::kernels {

// The launch's scalars, each already rounded to fp32 from its double as LibTorch rounds a Scalar
// argument of an fp32 op (static_cast<float>), so host and device see the same values.
struct AdamWScalars {
  float grad_scale = 1.0f;        // clipping factor applied to the gradient first
  float beta1 = 0.9f;             // exp_avg.mul_(beta1)
  float one_minus_beta1 = 0.1f;   // .add_(g, 1 - beta1)
  float beta2 = 0.95f;            // exp_avg_sq.mul_(beta2)
  float one_minus_beta2 = 0.05f;  // .addcmul_(g, g, 1 - beta2)
  float decay_factor = 0.0f;      // -lr * weight_decay (decayed elements only)
  float bias2 = 1.0f;             // 1 - beta2^t
  float eps = 1e-8f;
  float neg_step_size = 0.0f;  // -lr / (1 - beta1^t)
};

// Makes the scalars from the double-precision values the composite passes to LibTorch.
inline AdamWScalars make_adamw_scalars(double beta1, double beta2, double eps, double weight_decay, double lr,
                                       double bias1, double bias2, double grad_scale) {
  AdamWScalars s;
  s.grad_scale = static_cast<float>(grad_scale);
  s.beta1 = static_cast<float>(beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.decay_factor = static_cast<float>(-lr * weight_decay);
  s.bias2 = static_cast<float>(bias2);
  s.eps = static_cast<float>(eps);
  s.neg_step_size = static_cast<float>(-lr / bias1);
  return s;
}

// One element: updates p, m, v in place from the unscaled gradient g.
TANDEM_HOST_DEVICE inline void adamw_element(float& p, float g, float& m, float& v, bool decay, const AdamWScalars& s) {
  // The composite skips the multiply when the scale is 1; times 1.0f is exact, so no branch.
  g = g * s.grad_scale;
  m = fmaf(g, s.one_minus_beta1, m * s.beta1);
  v = fmaf(s.one_minus_beta2 * g, g, v * s.beta2);
  if (decay) p = fmaf(p, s.decay_factor, p);
  const float denom = sqrtf(v / s.bias2) + s.eps;
  p = p + s.neg_step_size * m / denom;
}

}  // namespace tandem::parallel::kernels
