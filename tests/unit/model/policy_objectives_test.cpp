// The post-training objectives against hand computations on a tiny batch: each method's gradient
// with respect to the logits must be -w_t * GC_t * (onehot(o_t) - softmax_t), with GC from the
// DeepSeekMath table (policy_objectives.h) computed here directly, and GRPO's and DPO's loss
// values against their formulas written out token by token.
#include "model/policy_objectives.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "runtime/error.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using testing::max_abs_diff;
using testing::report;

constexpr int64_t kB = 2, kT = 5, kV = 7;

// Two rows of 5 targets: row 0 holds a prompt target then response 0 (3 tokens) then padding;
// row 1 holds response 1 (2 tokens), response 2 (2 tokens), then a prompt target.
ResponseTokens layout() {
  ResponseTokens r;
  r.response = at::tensor({-1, 0, 0, 0, -1, 1, 1, 2, 2, -1}, at::kLong).view({kB, kT});
  r.num_responses = 3;
  return r;
}

struct Batch {
  at::Tensor logits;  // [B*T, V] leaf
  at::Tensor targets;
  HeadOutput head;
};

Batch make_batch(const ResponseTokens& r, uint64_t seed) {
  torch::manual_seed(seed);
  Batch b;
  b.logits = at::randn({kB * kT, kV}, at::kDouble).requires_grad_(true);
  b.targets = at::randint(kV, {kB * kT}, at::kLong);
  b.head.logits = b.logits;
  b.head.targets = {b.targets};
  b.head.responses = std::make_shared<ResponseTokens>(r);
  return b;
}

// -coef_t * (onehot - softmax) per row: the logits' gradient of -sum_t coef_t log pi(o_t).
at::Tensor expected_grad(const Batch& b, const at::Tensor& coef) {
  const at::Tensor probs = at::softmax(b.logits.detach(), -1);
  const at::Tensor onehot = at::one_hot(b.targets, kV).to(at::kDouble);
  return -coef.reshape({-1, 1}) * (onehot - probs);
}

at::Tensor logprobs_of(const Batch& b) {
  return at::log_softmax(b.logits.detach(), -1).gather(1, b.targets.unsqueeze(1)).view({kB, kT});
}

// 1 / (|o_i| R) on response tokens.
at::Tensor length_weights(const ResponseTokens& r) {
  const std::vector<double> lengths{3, 2, 2};
  at::Tensor w = at::zeros({kB, kT}, at::kDouble);
  for (int64_t i = 0; i < kB; ++i)
    for (int64_t t = 0; t < kT; ++t) {
      const int64_t id = r.response[i][t].item<int64_t>();
      if (id >= 0) w[i][t] = 1.0 / (lengths[id] * 3);
    }
  return w;
}

void check_grad(const std::string& method, Batch& b, const LossPieces& p, const at::Tensor& coef) {
  p.loss.backward();
  const double diff = max_abs_diff(b.logits.grad(), expected_grad(b, coef));
  report("objectives." + method, "grad vs hand GC (abs)", diff);
  EXPECT_LT(diff, 1e-12) << method;
}

TEST(PolicyObjectives, SftCoefficientIsOneOnResponseTokens) {
  const ResponseTokens r = layout();
  Batch b = make_batch(r, 1);
  const ModelConfig c = testing::tiny_config();
  const LossPieces p = SftObjective().losses(c, b.head);
  const at::Tensor w = length_weights(r);
  EXPECT_NEAR(p.loss.item<double>(), -(w * logprobs_of(b)).sum().item<double>(), 1e-12);
  check_grad("sft", b, p, w);
}

TEST(PolicyObjectives, RftCoefficientKeepsOnlyCorrectResponses) {
  ResponseTokens r = layout();
  r.coefficients = at::tensor({1.0, 0.0, 1.0}, at::kDouble);  // response 1 was wrong
  Batch b = make_batch(r, 2);
  const LossPieces p = SftObjective().losses(testing::tiny_config(), b.head);
  const at::Tensor coef = length_weights(r) * (r.response != 1).to(at::kDouble);
  check_grad("rft", b, p, coef);
  EXPECT_EQ(b.logits.grad().narrow(0, 5, 2).abs().max().item<double>(), 0.0);  // response 1's rows
}

TEST(PolicyObjectives, GrpoMatchesTheClippedFormulaAndItsCoefficient) {
  ResponseTokens r = layout();
  r.advantages = at::tensor({1.2, -0.7, 0.4}, at::kDouble);
  Batch b = make_batch(r, 3);
  const at::Tensor logp = logprobs_of(b);
  torch::manual_seed(30);
  // Old and reference log-probabilities around the current ones, some ratios beyond 1 +- eps.
  r.old_logprobs = logp + 0.4 * at::randn({kB, kT}, at::kDouble);
  r.ref_logprobs = logp + 0.3 * at::randn({kB, kT}, at::kDouble);
  b.head.responses = std::make_shared<ResponseTokens>(r);
  const double eps = 0.2, beta = 0.05;
  const LossPieces p = GrpoObjective(eps, beta).losses(testing::tiny_config(), b.head);

  double expected = 0;
  at::Tensor coef = at::zeros({kB, kT}, at::kDouble);
  const at::Tensor w = length_weights(r);
  int64_t clipped_tokens = 0;
  for (int64_t i = 0; i < kB; ++i) {
    for (int64_t t = 0; t < kT; ++t) {
      const int64_t id = r.response[i][t].item<int64_t>();
      if (id < 0) continue;
      const double a = r.advantages[id].item<double>();
      const double rho = std::exp(logp[i][t].item<double>() - r.old_logprobs[i][t].item<double>());
      const double ref_ratio = std::exp(r.ref_logprobs[i][t].item<double>() - logp[i][t].item<double>());
      const double unclipped = rho * a, clipped = std::clamp(rho, 1 - eps, 1 + eps) * a;
      const double kl = ref_ratio - std::log(ref_ratio) - 1;
      expected += w[i][t].item<double>() * -(std::min(unclipped, clipped) - beta * kl);
      const bool active = unclipped <= clipped;
      clipped_tokens += active ? 0 : 1;
      coef[i][t] = w[i][t].item<double>() * ((active ? rho * a : 0.0) + beta * (ref_ratio - 1));
    }
  }
  ASSERT_GT(clipped_tokens, 0) << "the batch should exercise the clip";
  EXPECT_NEAR(p.loss.item<double>(), expected, 1e-12);
  check_grad("grpo", b, p, coef);
}

TEST(PolicyObjectives, DpoCoefficientIsTheSigmoidOfTheNegativeMargin) {
  ResponseTokens r;  // two pairs: responses (0 chosen, 1 rejected), (2 chosen, 3 rejected)
  r.response = at::tensor({-1, 0, 0, 1, 1, -1, 2, 2, 3, 3}, at::kLong).view({kB, kT});
  r.num_responses = 4;
  Batch b = make_batch(r, 4);
  const at::Tensor logp = logprobs_of(b);
  torch::manual_seed(40);
  r.ref_logprobs = logp + 0.5 * at::randn({kB, kT}, at::kDouble);
  b.head.responses = std::make_shared<ResponseTokens>(r);
  const double beta = 0.1;
  const LossPieces p = DpoObjective(beta).losses(testing::tiny_config(), b.head);

  std::vector<double> delta(4, 0.0);
  for (int64_t i = 0; i < kB; ++i)
    for (int64_t t = 0; t < kT; ++t) {
      const int64_t id = r.response[i][t].item<int64_t>();
      if (id >= 0) delta[id] += logp[i][t].item<double>() - r.ref_logprobs[i][t].item<double>();
    }
  const double m0 = delta[0] - delta[1], m1 = delta[2] - delta[3];
  auto log_sigmoid = [](double x) { return -std::log1p(std::exp(-x)); };
  auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  EXPECT_NEAR(p.loss.item<double>(), -(log_sigmoid(beta * m0) + log_sigmoid(beta * m1)) / 2, 1e-12);
  at::Tensor coef = at::zeros({kB, kT}, at::kDouble);
  for (int64_t i = 0; i < kB; ++i)
    for (int64_t t = 0; t < kT; ++t) {
      const int64_t id = r.response[i][t].item<int64_t>();
      if (id < 0) continue;
      const double m = id < 2 ? m0 : m1;
      coef[i][t] = (id % 2 == 0 ? 1.0 : -1.0) * beta * sigmoid(-beta * m) / 2;  // 1/P with P = 2
    }
  check_grad("dpo", b, p, coef);
}

TEST(PolicyObjectives, ObjectivesRefuseMicroBatchesWithoutResponses) {
  Batch b = make_batch(layout(), 5);
  b.head.responses = nullptr;
  EXPECT_THROW(SftObjective().losses(testing::tiny_config(), b.head), Error);
}

TEST(PolicyObjectives, EntropyIsThePolicysEntropyAtEachTarget) {
  Batch b = make_batch(layout(), 6);
  const TokenLogprobs lp = main_head_logprobs(b.head, kB, kT);
  const at::Tensor logp_all = at::log_softmax(b.logits.detach(), -1);
  const at::Tensor entropy = -(logp_all.exp() * logp_all).sum(-1).view({kB, kT});
  EXPECT_LT(max_abs_diff(lp.entropy, entropy), 1e-12);
  EXPECT_LT(max_abs_diff(lp.logprobs, logprobs_of(b)), 1e-12);
}

}  // namespace
}  // namespace tandem::model
