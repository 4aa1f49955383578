// Helpers shared by the model unit tests: finite-difference gradient checks in float64, error
// measures, and a per-family record of the worst error seen (printed, for the issue note).
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace tandem::model::testing {

// The test tensors are tiny: intra-op threads cost more than they give (5 s vs 2 s for this
// executable on the shared 2-core machine), so every test process runs single-threaded.
inline const bool kSingleThreadedTests = [] {
  at::set_num_threads(1);
  return true;
}();

// Largest |a - b| over all elements.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// |a - b| relative to the scale of b (max |b|, at least 1e-12).
inline double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(b.to(at::kDouble).abs().max().item<double>(), 1e-12);
  return max_abs_diff(a, b) / scale;
}

// Prints "[family] what: value" and records it as a gtest property.
inline void report(const std::string& family, const std::string& what, double value) {
  std::printf("[%s] %s: %.3e\n", family.c_str(), what.c_str(), value);
  ::testing::Test::RecordProperty(family + "." + what, std::to_string(value));
}

// Compares autograd gradients of the scalar `f()` with respect to `tensors` (float64 leaves
// requiring grad) with central differences on up to `samples` entries of each tensor. Returns
// the worst |numeric - analytic| divided by the tensor's largest analytic gradient magnitude.
inline double finite_difference_error(const std::function<at::Tensor()>& f, const std::vector<at::Tensor>& tensors,
                                      int samples = 6, double eps = 1e-6, uint64_t seed = 7) {
  for (const at::Tensor& t : tensors) {
    if (t.grad().defined()) t.mutable_grad().reset();
  }
  f().backward();
  std::vector<at::Tensor> analytic;
  for (const at::Tensor& t : tensors) {
    analytic.push_back(t.grad().defined() ? t.grad().clone() : at::zeros_like(t));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  double worst = 0;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor flat = tensors[i].view({-1});
    const at::Tensor grad = analytic[i].view({-1});
    const double scale = std::max(grad.abs().max().item<double>(), 1e-8);
    const int64_t n = flat.numel();
    const int64_t count = std::min<int64_t>(samples, n);
    const at::Tensor picks = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)).narrow(0, 0, count);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t idx = picks[j].item<int64_t>();
      const double v = flat[idx].item<double>();
      flat[idx].fill_(v + eps);
      const double up = f().item<double>();
      flat[idx].fill_(v - eps);
      const double down = f().item<double>();
      flat[idx].fill_(v);
      const double numeric = (up - down) / (2 * eps);
      worst = std::max(worst, std::abs(numeric - grad[idx].item<double>()) / scale);
    }
  }
  return worst;
}

// sum(out * w) with a fixed random w: a scalar whose gradient exercises every output element.
inline at::Tensor weighted_sum(const at::Tensor& out, uint64_t seed = 3) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor w = at::randn(out.sizes(), gen, out.options().requires_grad(false));
  return (out * w).sum();
}

}  // namespace tandem::model::testing
