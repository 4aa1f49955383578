// AdamW's pieces (as the data-parallel optimizer applies them) equal the update computed by hand
// in double precision; the clipping factor.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "parallel/adamw.h"

namespace tandem::parallel {
namespace {

// Reference AdamW in double for one element.
struct Reference {
  double p, m = 0, v = 0;
  void step(double g, double lr, int t, const AdamWConfig& c, bool decay) {
    m = c.beta1 * m + (1 - c.beta1) * g;
    v = c.beta2 * v + (1 - c.beta2) * g * g;
    if (decay) p -= lr * c.weight_decay * p;
    const double m_hat = m / (1 - std::pow(c.beta1, t));
    const double v_hat = v / (1 - std::pow(c.beta2, t));
    p -= lr * m_hat / (std::sqrt(v_hat) + c.eps);
  }
};

// The pieces in the order the data-parallel optimizer applies them, weight decay on the first
// three elements only (the fourth stands for a norm weight).
TEST(AdamW, PiecesMatchTheUpdateComputedByHand) {
  const AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  at::Tensor param = at::tensor({0.3f, -1.2f, 2.0f, 1.0f});
  at::Tensor exp_avg = at::zeros({4}), exp_avg_sq = at::zeros({4});
  std::vector<Reference> reference = {{0.3}, {-1.2}, {2.0}, {1.0}};
  const std::vector<std::vector<float>> grads = {{0.5f, -0.25f, 1.5f, 0.1f}, {-0.3f, 0.8f, 0.0f, -2.0f},
                                                 {0.05f, 0.05f, -0.7f, 0.4f}};
  const std::vector<double> lrs = {1e-2, 5e-3, 2e-3};
  for (int t = 0; t < 3; ++t) {
    const AdamWStepScalars scalars = adamw_step_scalars(config, t + 1, lrs[t]);
    adamw_update_moments_(at::tensor(grads[t]) * 0.5, exp_avg, exp_avg_sq, config);  // clip scale 0.5
    at::Tensor decayed = param.narrow(0, 0, 3);
    adamw_apply_decay_(decayed, config, scalars);
    adamw_apply_step_(param, exp_avg, exp_avg_sq, config, scalars);
    for (int i = 0; i < 4; ++i) reference[i].step(0.5 * grads[t][i], lrs[t], t + 1, config, i < 3);
  }
  double worst = 0;
  for (int i = 0; i < 4; ++i) {
    worst = std::max(worst, std::abs(param[i].item<double>() - reference[i].p) / std::abs(reference[i].p));
  }
  std::printf("AdamW vs double reference after 3 steps: max relative error %.3g\n", worst);
  EXPECT_LT(worst, 1e-6);
}

TEST(AdamW, ClippingScalesTheGlobalNormDownToTheLimit) {
  EXPECT_EQ(clip_scale(0.5, 1.0), 1.0);   // under the limit: untouched
  EXPECT_EQ(clip_scale(1.0, 1.0), 1.0);
  EXPECT_EQ(clip_scale(10.0, 0.0), 1.0);  // clipping off
  EXPECT_NEAR(clip_scale(4.0, 1.0), 0.25, 1e-6);
  // Clipping a real gradient: the scaled norm lands on the limit.
  const at::Tensor grads = at::tensor({3.0f, 4.0f, 12.0f});  // norm 13
  const double scale = clip_scale(grads.norm().item<double>(), 2.5);
  EXPECT_NEAR((grads * scale).norm().item<double>(), 2.5, 1e-5);
  EXPECT_LT((grads * scale).norm().item<double>(), 2.5);
}

}  // namespace
}  // namespace tandem::parallel
