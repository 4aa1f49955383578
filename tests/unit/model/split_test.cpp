// B/W split: the split linear against aten's linear, the queue's per-backward grouping and
// FIFO order, and the whole model (attention, MLPs, router, experts, head, MTP) giving
// bit-identical gradients with the weight gradients deferred and run later.
#include <map>

#include "model/detail/layers.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat));
}

at::Tensor tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t + 1}, gen, at::TensorOptions().dtype(at::kLong));
}

TEST(ModelSplitLinear, MatchesAtenLinearBitForBit) {
  const at::Tensor w0 = randn({24, 16}, 1), x0 = randn({3, 5, 16}, 2), g = randn({3, 5, 24}, 3);
  // aten's linear.
  const at::Tensor w_ref = w0.clone().requires_grad_(), x_ref = x0.clone().requires_grad_();
  const at::Tensor y_ref = at::linear(x_ref, w_ref);
  y_ref.backward(g);
  for (bool defer : {false, true}) {
    auto queue = std::make_shared<WeightGradQueue>();
    queue->set_deferring(defer);
    const at::Tensor w = w0.clone().requires_grad_(), x = x0.clone().requires_grad_();
    const at::Tensor y = detail::split_linear(x, w, queue);
    y.backward(g);
    EXPECT_TRUE(at::equal(y, y_ref));
    EXPECT_TRUE(at::equal(x.grad(), x_ref.grad()));  // B is computed now either way
    EXPECT_EQ(w.grad().defined(), !defer);
    EXPECT_EQ(queue->num_tasks(), defer ? 1u : 0u);
    queue->run_all();
    const double err = max_abs_diff(w.grad(), w_ref.grad());
    report("bw_split", defer ? "split linear deferred W vs aten linear" : "split linear vs aten linear", err);
    EXPECT_EQ(err, 0.0);
  }
}

TEST(ModelSplitLinear, QueueGroupsPerBackwardCallFirstInFirstOut) {
  auto queue = std::make_shared<WeightGradQueue>();
  queue->set_deferring(true);
  const at::Tensor w = randn({4, 6}, 4).requires_grad_();
  const at::Tensor x1 = randn({2, 6}, 5), x2 = randn({3, 6}, 6);
  detail::split_linear(x1, w, queue).sum().backward();
  queue->close_group();
  detail::split_linear(x2, w, queue).sum().backward();
  queue->close_group();
  EXPECT_EQ(queue->num_groups(), 2u);
  EXPECT_FALSE(w.grad().defined());
  ASSERT_TRUE(queue->run_next_group());  // the first backward's W
  EXPECT_TRUE(at::allclose(w.grad(), at::ones({4, 2}).mm(x1)));
  ASSERT_TRUE(queue->run_next_group());
  EXPECT_TRUE(at::allclose(w.grad(), at::ones({4, 2}).mm(x1) + at::ones({4, 3}).mm(x2)));
  EXPECT_FALSE(queue->run_next_group());
}

// Gradients of every parameter after one forward_loss + backward, optionally with W deferred.
std::map<std::string, at::Tensor> model_grads(Model& model, const at::Tensor& toks, bool split, int64_t* deferred) {
  for (auto& [name, p] : model.named_parameters()) p.mutable_grad().reset();
  model.set_weight_grad_split(split);
  model.forward_loss(toks).loss.backward();
  model.set_weight_grad_split(false);
  *deferred = static_cast<int64_t>(model.weight_grad_queue().num_tasks());
  if (split) {
    // Deferred weights have no gradient yet; norms and the embedding got theirs in B.
    for (auto& [name, p] : model.named_parameters()) {
      if (name.find("experts.0.up_proj") != std::string::npos || name == "lm_head.weight") {
        EXPECT_FALSE(p.grad().defined()) << name;
      }
      if (name == "model.norm.weight" || name == "model.embed_tokens.weight") {
        EXPECT_TRUE(p.grad().defined()) << name;
      }
    }
  }
  model.run_queued_weight_grads();
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, p] : model.named_parameters()) {
    if (p.grad().defined()) grads[name] = p.grad().clone();
  }
  return grads;
}

TEST(ModelSplitLinear, WholeModelDeferredGradientsAreBitIdentical) {
  for (bool tied : {false, true}) {
    ModelConfig c = tiny_config();
    c.tie_word_embeddings = tied;
    c.num_nextn_predict_layers = tied ? 2 : 1;
    Model model(c, 11);
    const at::Tensor toks = tokens(2, 8, c.vocab_size, 12);
    int64_t plain_tasks = 0, split_tasks = 0;
    const auto plain = model_grads(model, toks, false, &plain_tasks);
    const auto split = model_grads(model, toks, true, &split_tasks);
    EXPECT_EQ(plain_tasks, 0);
    EXPECT_GT(split_tasks, 50);  // attention, MLP, router, every used expert, eh_proj, head
    ASSERT_EQ(plain.size(), split.size());
    double worst = 0;
    for (const auto& [name, g] : plain) {
      ASSERT_TRUE(split.count(name)) << name;
      const double err = max_abs_diff(split.at(name), g);
      EXPECT_EQ(err, 0.0) << name;
      worst = std::max(worst, err);
    }
    report("bw_split", tied ? "tied model, D=2: max |dW split - dW plain|" : "model: max |dW split - dW plain|", worst);
    std::printf("[bw_split] %lld deferred W tasks\n", static_cast<long long>(split_tasks));
  }
}

}  // namespace
}  // namespace tandem::model
