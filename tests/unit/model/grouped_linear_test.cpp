// The routed experts' grouped linear (grouped_split_linear, one at::_grouped_mm each way) against
// one split_linear per group on the CPU in fp32: output, input gradient and every weight gradient,
// with empty groups, with the weight gradients deferred into a WeightGradQueue (equal once the
// queue runs, absent before), and under bf16 autocast. The GPU runs the same function on its
// CUTLASS path (tests/gpu/moe_kernels_gpu_test.cpp).
#include "model/autocast.h"
#include "model/detail/layers.h"
#include "runtime/error.h"
#include "test_util.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;

struct Groups {
  std::vector<int64_t> rows;  // per group
  at::Tensor offsets;         // [G] int32 ends
  int64_t total = 0;
};

Groups groups_of(std::vector<int64_t> rows) {
  Groups g;
  std::vector<int32_t> ends;
  for (int64_t r : rows) ends.push_back(static_cast<int32_t>(g.total += r));
  g.offsets = at::tensor(ends, at::TensorOptions().dtype(at::kInt));
  g.rows = std::move(rows);
  return g;
}

std::vector<at::Tensor> make_weights(int64_t count, int64_t out, int64_t in, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<at::Tensor> weights;
  for (int64_t i = 0; i < count; ++i) weights.push_back(at::randn({out, in}, gen).requires_grad_());
  return weights;
}

// The reference: group by group through split_linear (what the CPU MoE path runs).
at::Tensor per_group(const at::Tensor& x, const std::vector<at::Tensor>& weights, const Groups& g) {
  std::vector<at::Tensor> outputs;
  int64_t offset = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    outputs.push_back(detail::split_linear(x.narrow(0, offset, g.rows[i]), weights[i], nullptr));
    offset += g.rows[i];
  }
  return at::cat(outputs, 0);
}

std::vector<at::Tensor> grads_of(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> grads;
  for (const at::Tensor& t : tensors) grads.push_back(t.grad().defined() ? t.grad().clone() : at::Tensor());
  return grads;
}

TEST(ModelGroupedLinear, MatchesOneLinearPerGroupWithEmptyGroups) {
  const Groups g = groups_of({5, 0, 9, 2, 0});
  constexpr int64_t kIn = 16, kOut = 24;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const at::Tensor probe = at::randn({g.total, kOut}, gen);
  const at::Tensor x_values = at::randn({g.total, kIn}, gen);
  ASSERT_TRUE(detail::grouped_linear_supported(kIn, kOut));
  EXPECT_FALSE(detail::grouped_linear_supported(12, kOut));

  auto run = [&](bool grouped) {
    const std::vector<at::Tensor> weights = make_weights(5, kOut, kIn, 4);
    const at::Tensor x = x_values.clone().requires_grad_();
    const at::Tensor y = grouped ? detail::grouped_split_linear(x, weights, g.offsets, nullptr)
                                 : per_group(x, weights, g);
    (y * probe).sum().backward();
    std::vector<at::Tensor> results = {y.detach(), x.grad().clone()};
    for (const at::Tensor& grad : grads_of(weights)) results.push_back(grad.defined() ? grad : at::zeros({kOut, kIn}));
    return results;
  };
  const std::vector<at::Tensor> got = run(true);
  const std::vector<at::Tensor> expected = run(false);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, max_rel_diff(got[i], expected[i]));
  report("grouped_linear", "fp32 output and gradients vs per-group linear (rel)", worst);
  EXPECT_LT(worst, 1e-6);
  // Empty groups get an exact zero gradient.
  EXPECT_EQ(got[3].abs().max().item<double>(), 0.0);
}

TEST(ModelGroupedLinear, DefersWeightGradientsIntoTheQueue) {
  const Groups g = groups_of({3, 7, 6});
  constexpr int64_t kIn = 8, kOut = 16;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor x_values = at::randn({g.total, kIn}, gen);

  auto run = [&](bool defer) {
    const std::vector<at::Tensor> weights = make_weights(3, kOut, kIn, 6);
    auto queue = std::make_shared<WeightGradQueue>();
    queue->set_deferring(defer);
    const at::Tensor x = x_values.clone().requires_grad_();
    detail::grouped_split_linear(x, weights, g.offsets, queue).pow(2).sum().backward();
    const at::Tensor input_grad = x.grad().clone();
    EXPECT_EQ(queue->num_tasks(), defer ? 1u : 0u);  // one task for all groups
    if (defer) {
      for (const at::Tensor& w : weights) EXPECT_FALSE(w.grad().defined()) << "W ran before the queue";
    }
    queue->run_all();
    std::vector<at::Tensor> results = {input_grad};
    for (const at::Tensor& grad : grads_of(weights)) results.push_back(grad);
    return results;
  };
  const std::vector<at::Tensor> deferred = run(true);
  const std::vector<at::Tensor> direct = run(false);
  for (size_t i = 0; i < deferred.size(); ++i) {
    ASSERT_TRUE(deferred[i].defined()) << i;
    EXPECT_TRUE(at::equal(deferred[i], direct[i])) << "tensor " << i << ": deferring changed the bits";
  }
}

TEST(ModelGroupedLinear, ComputesInTheAutocastDtype) {
  const Groups g = groups_of({6, 2});
  const std::vector<at::Tensor> weights = make_weights(2, 16, 8, 8);
  const at::Tensor x = at::randn({g.total, 8}).requires_grad_();
  at::Tensor y;
  {
    const AutocastScope autocast(at::kCPU, at::kBFloat16);
    y = detail::grouped_split_linear(x, weights, g.offsets, nullptr);
  }
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor expected = per_group(x.detach(), weights, g);
  const double error = max_rel_diff(y.detach(), expected.detach());
  report("grouped_linear", "bf16 autocast output vs fp32 (rel)", error);
  EXPECT_LT(error, 2e-2);
  y.sum().backward();
  EXPECT_EQ(weights[0].grad().scalar_type(), at::kFloat);  // fp32 masters get fp32 gradients
  EXPECT_EQ(x.grad().scalar_type(), at::kFloat);
}

TEST(ModelGroupedLinear, FrozenWeightsOrInputTakeNoGradient) {
  const Groups g = groups_of({3, 5});
  std::vector<at::Tensor> frozen = {at::randn({8, 8}), at::randn({8, 8})};
  const at::Tensor x = at::randn({g.total, 8}).requires_grad_();
  detail::grouped_split_linear(x, frozen, g.offsets, nullptr).sum().backward();
  EXPECT_TRUE(x.grad().defined());
  for (const at::Tensor& w : frozen) EXPECT_FALSE(w.grad().defined());
  // Only the last weight trains: it alone gets a gradient, the input none.
  std::vector<at::Tensor> weights = make_weights(2, 8, 8, 9);
  weights[0] = weights[0].detach();
  const at::Tensor input = at::randn({g.total, 8});
  detail::grouped_split_linear(input, weights, g.offsets, nullptr).sum().backward();
  EXPECT_FALSE(weights[0].grad().defined());
  ASSERT_TRUE(weights[1].grad().defined());
  EXPECT_TRUE(at::allclose(weights[1].grad(), at::ones({8, 5}).mm(input.narrow(0, 3, 5))));
}

TEST(ModelGroupedLinear, RefusesMismatchedOffsets) {
  const std::vector<at::Tensor> weights = make_weights(2, 8, 8, 1);
  const at::Tensor x = at::randn({4, 8});
  EXPECT_THROW(detail::grouped_split_linear(x, weights, at::tensor({4}, at::TensorOptions().dtype(at::kInt)), nullptr),
               Error);
  EXPECT_THROW(
      detail::grouped_split_linear(x, weights, at::tensor({2, 4}, at::TensorOptions().dtype(at::kLong)), nullptr),
      Error);
}

}  // namespace
}  // namespace tandem::model
