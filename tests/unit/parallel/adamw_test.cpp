// FlatParamGroup and AdamW: parameters keep their autograd identity while living in one flat
// buffer; gradients accumulate in place; an AdamW step equals the update computed by hand in
// double precision; a sharded optimizer (ZeRO) updates exactly its own slice.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "parallel/adamw.h"

namespace tandem::parallel {
namespace {

at::Tensor leaf(std::vector<float> values, std::vector<int64_t> shape) {
  return at::tensor(values, at::kFloat).reshape(shape).clone().set_requires_grad(true);
}

TEST(FlatParamGroup, ParametersBecomeViewsAndGradientsAccumulateInPlace) {
  at::Tensor w = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  at::Tensor b = leaf({0.5f, -0.5f}, {2});
  FlatParamGroup group("dense", {{"w", w, true}, {"b", b, false}}, /*num_shards=*/3, /*shard_rank=*/0);
  EXPECT_EQ(group.used_numel(), 8);
  EXPECT_EQ(group.numel(), 9);  // padded to a multiple of 3 shards
  EXPECT_TRUE(w.is_leaf());
  EXPECT_EQ(w.data_ptr<float>(), group.params().data_ptr<float>());
  EXPECT_EQ(b.data_ptr<float>(), group.params().data_ptr<float>() + 6);
  EXPECT_FLOAT_EQ(group.params()[7].item<float>(), -0.5f);
  EXPECT_FLOAT_EQ(group.decay_mask()[5].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(group.decay_mask()[6].item<float>(), 0.0f);

  const at::Tensor x = at::tensor({1.0f, 2.0f, 3.0f});
  for (int pass = 0; pass < 2; ++pass) {  // two backward passes accumulate
    const at::Tensor y = (w.matmul(x) + b).sum();
    torch::autograd::backward({y});
  }
  // d/dw = x per row, twice; d/db = 1 per entry, twice.
  EXPECT_TRUE(at::equal(group.grads().narrow(0, 0, 6), at::tensor({2.f, 4.f, 6.f, 2.f, 4.f, 6.f})));
  EXPECT_TRUE(at::equal(group.grads().narrow(0, 6, 2), at::tensor({2.f, 2.f})));
  EXPECT_EQ(w.grad().data_ptr<float>(), group.grads().data_ptr<float>());
  group.zero_grad();
  EXPECT_EQ(group.grads().abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(b.grad().data_ptr<float>(), group.grads().data_ptr<float>() + 6);
}

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

TEST(AdamW, MatchesTheUpdateComputedByHand) {
  const AdamWConfig config{0.9, 0.95, 1e-8, 0.1};
  at::Tensor w = leaf({0.3f, -1.2f, 2.0f}, {3});
  at::Tensor norm = leaf({1.0f}, {1});
  FlatParamGroup group("dense", {{"w", w, true}, {"norm.weight", norm, false}}, 1, 0);
  AdamW optimizer({&group}, config);
  std::vector<Reference> reference = {{0.3}, {-1.2}, {2.0}, {1.0}};
  const std::vector<std::vector<float>> grads = {{0.5f, -0.25f, 1.5f, 0.1f}, {-0.3f, 0.8f, 0.0f, -2.0f},
                                                 {0.05f, 0.05f, -0.7f, 0.4f}};
  const std::vector<double> lrs = {1e-2, 5e-3, 2e-3};
  for (int t = 0; t < 3; ++t) {
    group.grads().narrow(0, 0, 4).copy_(at::tensor(grads[t]));
    optimizer.step(lrs[t], /*grad_scale=*/0.5);
    for (int i = 0; i < 4; ++i) reference[i].step(0.5 * grads[t][i], lrs[t], t + 1, config, i < 3);
  }
  double worst = 0;
  for (int i = 0; i < 4; ++i) {
    const double got = group.params()[i].item<double>();
    worst = std::max(worst, std::abs(got - reference[i].p) / std::abs(reference[i].p));
  }
  std::printf("AdamW vs double reference after 3 steps: max relative error %.3g\n", worst);
  EXPECT_LT(worst, 1e-6);
  EXPECT_EQ(optimizer.step_count(), 3);
  EXPECT_FLOAT_EQ(w[0].item<float>(), group.params()[0].item<float>());  // the parameter sees it
}

TEST(AdamW, ShardedOptimizerTouchesOnlyItsSlice) {
  at::Tensor w = leaf({1, 2, 3, 4, 5, 6, 7}, {7});
  FlatParamGroup group("experts", {{"w", w, true}}, /*num_shards=*/2, /*shard_rank=*/1);
  EXPECT_EQ(group.shard_numel(), 4);
  EXPECT_EQ(group.shard_offset(), 4);
  const at::Tensor before = group.params().clone();
  group.grads().fill_(1.0f);
  AdamW optimizer({&group}, {});
  optimizer.step(0.1);
  EXPECT_TRUE(at::equal(group.params().narrow(0, 0, 4), before.narrow(0, 0, 4)));
  EXPECT_FALSE(at::equal(group.params().narrow(0, 4, 3), before.narrow(0, 4, 3)));
  EXPECT_EQ(optimizer.exp_avg(0).numel(), 4);
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
