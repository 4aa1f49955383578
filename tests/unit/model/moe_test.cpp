// Router and MoE layer: group limit, bias used for selection only, the auxiliary-loss-free
// bias update balancing a skewed router, the sequence-wise balance loss formula, the layer
// against a per-token reference, capacity dropping, and finite-difference gradients of the
// routing path (gates, router, experts, balance loss) in float64.
#include <algorithm>
#include <numeric>

#include "model/detail/moe.h"
#include "test_util.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;
using detail::RoutingOptions;

constexpr auto kF64 = at::kDouble;

at::Tensor randn(at::IntArrayRef shape, uint64_t seed, double std = 1.0) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(kF64)) * std;
}

RoutingOptions options(int64_t experts, int64_t k, int64_t groups, int64_t topk_group) {
  RoutingOptions o;
  o.num_experts = experts;
  o.top_k = k;
  o.n_group = groups;
  o.topk_group = topk_group;
  return o;
}

// Indices of the `k` largest values (ties to the lower index), by plain sorting.
std::vector<int64_t> top_indices(const std::vector<double>& v, int64_t k) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

std::vector<double> row(const at::Tensor& t, int64_t i) {
  const at::Tensor r = t[i].contiguous().to(kF64);
  return {r.data_ptr<double>(), r.data_ptr<double>() + r.numel()};
}

// Reference group-limited choice for one token (docs/model.md#moe-routing, step 3), as a sorted set.
std::vector<int64_t> ref_choice(const std::vector<double>& sel, const RoutingOptions& o) {
  const int64_t per = o.num_experts / o.n_group;
  std::vector<double> group_score(o.n_group);
  for (int64_t g = 0; g < o.n_group; ++g) {
    std::vector<double> members(sel.begin() + g * per, sel.begin() + (g + 1) * per);
    std::sort(members.rbegin(), members.rend());
    group_score[g] = members[0] + (per > 1 ? members[1] : 0.0);
  }
  std::vector<double> masked(sel.size(), -1e300);
  for (int64_t g : top_indices(group_score, o.topk_group)) {
    for (int64_t e = g * per; e < (g + 1) * per; ++e) masked[e] = sel[e];
  }
  std::vector<int64_t> chosen = top_indices(masked, o.top_k);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<int64_t> sorted_row(const at::Tensor& idx, int64_t i) {
  const at::Tensor r = std::get<0>(idx[i].sort());
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()};
}

TEST(ModelRouting, GroupLimitIsRespected) {
  const RoutingOptions o = options(16, 4, 4, 2);
  const at::Tensor sel = randn({200, 16}, 1);
  const at::Tensor idx = detail::group_limited_topk(sel, o);  // [N, K]
  int64_t mismatches = 0, groups_violated = 0, differs_from_unlimited = 0;
  const at::Tensor unlimited = detail::group_limited_topk(sel, options(16, 4, 4, 4));
  for (int64_t i = 0; i < sel.size(0); ++i) {
    const std::vector<int64_t> got = sorted_row(idx, i);
    if (got != ref_choice(row(sel, i), o)) ++mismatches;
    std::vector<int64_t> groups;
    for (int64_t e : got) groups.push_back(e / 4);
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    if (groups.size() > 2) ++groups_violated;
    if (got != sorted_row(unlimited, i)) ++differs_from_unlimited;
  }
  std::printf("[routing] group limit: %lld/200 tokens would pick differently without it; %lld mismatches\n",
              static_cast<long long>(differs_from_unlimited), static_cast<long long>(mismatches));
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(groups_violated, 0);
  EXPECT_GT(differs_from_unlimited, 0);  // the limit actually binds on this data
}

TEST(ModelRouting, BiasChangesSelectionButNotGateValues) {
  for (bool norm : {false, true}) {
    RoutingOptions o = options(8, 2, 1, 1);
    o.norm_topk_prob = norm;
    o.routed_scaling_factor = 2.5;
    const at::Tensor logits = randn({64, 8}, 2);
    const at::Tensor no_bias = at::zeros({8}, kF64);
    at::Tensor bias = at::zeros({8}, kF64);
    bias[5] = 10.0;  // expert 5 wins every selection
    const detail::Routing plain = detail::route(logits, no_bias, o);
    const detail::Routing biased = detail::route(logits, bias, o);
    EXPECT_TRUE((biased.topk_idx == 5).any(1).all().item<bool>());
    EXPECT_FALSE(at::equal(plain.topk_idx, biased.topk_idx));
    EXPECT_TRUE(at::equal(plain.scores, biased.scores));
    // Gate values are the unbiased affinities of the chosen experts (normalised, scaled).
    at::Tensor expected = at::sigmoid(logits).gather(1, biased.topk_idx);
    if (norm) expected = expected / (expected.sum(-1, true) + 1e-20);
    const double err = max_abs_diff(biased.topk_weight, expected * 2.5);
    report("routing", norm ? "gate == scaled normalised affinity (err)" : "gate == scaled affinity (err)", err);
    EXPECT_EQ(err, 0.0);
  }
}

TEST(ModelRouting, BiasUpdateBalancesASkewedRouter) {
  // Tokens share a common direction that the router weights favour for high-index experts.
  const int64_t n = 1024, d = 16, e = 16;
  RoutingOptions o = options(e, 2, 4, 2);
  at::Tensor x = randn({n, d}, 3);
  x.select(1, 0).add_(2.0);
  at::Tensor w = randn({e, d}, 4, 0.3);
  w.select(1, 0).copy_(at::linspace(-1.0, 1.0, e, at::TensorOptions().dtype(kF64)));
  const at::Tensor logits = at::matmul(x, w.t());
  at::Tensor bias = at::zeros({e}, at::kFloat);
  auto imbalance = [&](const at::Tensor& counts) {  // max load / mean load
    const at::Tensor c = counts.to(kF64);
    return (c.max() / c.mean()).item<double>();
  };
  const double initial = imbalance(detail::expert_counts(detail::route(logits, bias, o).topk_idx, e));
  std::vector<double> history;
  for (int step = 0; step < 400; ++step) {
    const at::Tensor counts = detail::expert_counts(detail::route(logits, bias, o).topk_idx, e);
    history.push_back(imbalance(counts));
    detail::update_routing_bias_(bias, counts, 0.01);
  }
  const double final_imbalance = *std::min_element(history.end() - 50, history.end());
  const double final_mean = std::accumulate(history.end() - 50, history.end(), 0.0) / 50;
  std::printf("[routing] bias update: max/mean expert load %.2f -> %.2f (mean of last 50 steps %.2f)\n", initial,
              final_imbalance, final_mean);
  EXPECT_GT(initial, 3.0);
  EXPECT_LT(final_mean, 1.5);
  EXPECT_LT(final_mean, initial / 2);
  // The update direction: overloaded experts go down, underloaded ones up, by exactly gamma.
  at::Tensor b = at::zeros({4}, at::kFloat);
  detail::update_routing_bias_(b, at::tensor({10, 0, 3, 3}, at::kLong), 0.5);
  EXPECT_TRUE(at::equal(b, at::tensor({-0.5f, 0.5f, 0.5f, 0.5f})));
}

TEST(ModelRouting, SequenceBalanceLossMatchesFormula) {
  const int64_t b = 3, t = 7, e = 8, k = 2;
  const double alpha = 0.01;
  RoutingOptions o = options(e, k, 2, 1);
  const at::Tensor scores = at::sigmoid(randn({b, t, e}, 5));
  const at::Tensor idx =
      detail::route(at::logit(scores.view({b * t, e})), at::zeros({e}, kF64), o).topk_idx.view({b, t, k});
  double expected = 0;
  for (int64_t s = 0; s < b; ++s) {
    double sum = 0;
    for (int64_t i = 0; i < e; ++i) {
      double chosen = 0, p = 0;
      for (int64_t tok = 0; tok < t; ++tok) {
        for (int64_t j = 0; j < k; ++j) chosen += idx[s][tok][j].item<int64_t>() == i ? 1 : 0;
        p += scores[s][tok][i].item<double>() / scores[s][tok].sum().item<double>();
      }
      const double f = double(e) / double(k * t) * chosen;
      sum += f * (p / t);
    }
    expected += alpha * sum / b;
  }
  const double got = detail::sequence_balance_loss(scores, idx, o, alpha).item<double>();
  report("routing", "balance loss vs formula (abs err)", std::abs(got - expected));
  EXPECT_NEAR(got, expected, 1e-14);
}

// --- MoE layer -----------------------------------------------------------------------------

ModelConfig tiny_moe(ScoringFunc scoring, bool norm, double alpha) {
  ModelConfig c;
  c.hidden_size = 12;
  c.moe_intermediate_size = 6;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.scoring_func = scoring;
  c.norm_topk_prob = norm;
  c.aux_loss_alpha = alpha;
  c.validate();
  return c;
}

detail::MoE make_moe(const ModelConfig& c, uint64_t seed) {
  detail::MoE moe(c, 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.normal_(0.0, 0.4, gen);
  moe->to(kF64);
  moe->gate->e_score_correction_bias.copy_(randn({c.n_routed_experts}, seed + 1, 0.1));
  return moe;
}

at::Tensor ref_swiglu(detail::SwiGLUImpl& m, const at::Tensor& x) {
  return at::matmul(at::silu(at::matmul(x, m.gate_proj->weight.t())) * at::matmul(x, m.up_proj->weight.t()),
                    m.down_proj->weight.t());
}

// Token by token, docs/model.md#moe-routing and #moe-output.
at::Tensor ref_moe(detail::MoE moe, const ModelConfig& c, const at::Tensor& x) {
  const at::Tensor x2 = x.reshape({-1, c.hidden_size});
  const RoutingOptions o = detail::routing_options(c);
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < x2.size(0); ++i) {
    const at::Tensor logits = at::matmul(moe->gate->weight, x2[i]);  // [E]
    const at::Tensor s = c.scoring_func == ScoringFunc::kSigmoid ? at::sigmoid(logits) : at::softmax(logits, 0);
    const std::vector<int64_t> chosen = ref_choice(row((s + moe->gate->e_score_correction_bias).unsqueeze(0), 0), o);
    double denominator = 0;
    for (int64_t e : chosen) denominator += s[e].item<double>();
    at::Tensor out = ref_swiglu(*moe->shared_experts, x2[i]);
    for (int64_t e : chosen) {
      at::Tensor g = s[e] * c.routed_scaling_factor;
      if (c.norm_topk_prob) g = g / denominator;
      out = out + g * ref_swiglu(*moe->experts[e]->as<detail::SwiGLUImpl>(), x2[i]);
    }
    rows.push_back(out);
  }
  return at::stack(rows).view(x.sizes());
}

TEST(ModelMoE, MatchesPerTokenReference) {
  double worst = 0;
  for (const auto& [scoring, norm] : std::vector<std::pair<ScoringFunc, bool>>{
           {ScoringFunc::kSigmoid, true}, {ScoringFunc::kSigmoid, false}, {ScoringFunc::kSoftmax, false}}) {
    const ModelConfig c = tiny_moe(scoring, norm, 0.0);
    detail::MoE moe = make_moe(c, 40);
    const at::Tensor x = randn({2, 5, 12}, 41);
    detail::ForwardContext ctx;
    worst = std::max(worst, max_abs_diff(moe->forward(x, ctx), ref_moe(moe, c, x)));
    EXPECT_EQ(moe->load().sum().item<int64_t>(), 2 * 5 * 3);
  }
  report("moe", "forward vs per-token reference (max abs err)", worst);
  EXPECT_LT(worst, 1e-12);
}

TEST(ModelMoE, RoutingPathGradientsMatchFiniteDifferences) {
  const ModelConfig c = tiny_moe(ScoringFunc::kSigmoid, true, 0.05);
  detail::MoE moe = make_moe(c, 50);
  const at::Tensor x = randn({2, 4, 12}, 51).requires_grad_();
  auto f = [&] {
    detail::ForwardContext ctx;
    const at::Tensor out = moe->forward(x, ctx);
    return weighted_sum(out) + ctx.aux_loss;  // aux enters the gradient through the output
  };
  std::vector<at::Tensor> wrt{x, moe->gate->weight, moe->shared_experts->up_proj->weight};
  for (int64_t e = 0; e < c.n_routed_experts; ++e)
    wrt.push_back(moe->experts[e]->as<detail::SwiGLUImpl>()->gate_proj->weight);
  const double err = finite_difference_error(f, wrt, 8);
  report("moe", "routing path grad vs finite diff (rel)", err);
  EXPECT_LT(err, 1e-6);
  // The balance loss alone reaches the router: with a zero output weight only aux remains.
  moe->zero_grad();
  detail::ForwardContext ctx;
  const at::Tensor out = moe->forward(x, ctx);
  (out * 0).sum().backward();
  EXPECT_GT(moe->gate->weight.grad().abs().max().item<double>(), 0.0);
}

TEST(ModelMoE, CapacityFactorDropsOverflowRows) {
  ModelConfig c = tiny_moe(ScoringFunc::kSigmoid, true, 0.0);
  c.capacity_factor = 1.0;  // capacity = ceil(N * K / E)
  detail::MoE moe = make_moe(c, 60);
  {
    torch::NoGradGuard no_grad;
    moe->gate->e_score_correction_bias.zero_();
    moe->gate->e_score_correction_bias[0] = 5.0;  // every token picks expert 0: it overflows
  }
  const at::Tensor x = randn({2, 8, 12}, 61);
  detail::ForwardContext ctx;
  moe->forward(x, ctx);
  const int64_t capacity = (16 * 3 + 7) / 8;
  EXPECT_EQ(moe->load()[0].item<int64_t>(), 16);  // load counts routing, before dropping
  int64_t expected_dropped = 0;
  for (int64_t e = 0; e < 8; ++e) expected_dropped += std::max<int64_t>(moe->load()[e].item<int64_t>() - capacity, 0);
  EXPECT_EQ(moe->dropped_rows(), expected_dropped);
  EXPECT_GE(expected_dropped, 16 - capacity);
  const detail::DispatchPlan plan = detail::plan_dispatch(moe->last_routing, 8, capacity);
  for (int64_t rows : plan.rows_per_expert) EXPECT_LE(rows, capacity);
  // The kept rows of expert 0 are its first `capacity` tokens in order.
  EXPECT_TRUE(at::equal(plan.token_index.narrow(0, 0, capacity), at::arange(capacity, at::kLong)));
}

}  // namespace
}  // namespace tandem::model
