// Activation recomputation (model/recompute.h): none, selective and full give bit-identical
// losses and gradients in fp32 on the CPU, with weight gradients computed in B or deferred (the
// B/W split), for MLA and GQA, MoE (with the sequence balance loss) and dense layers, MTP, tied
// heads; the forward's side effects (expert load counts, the logged balance loss) happen once;
// and the graph really holds the recomputation nodes (the mode is not silently ignored).
#include <functional>
#include <map>
#include <set>

#include "model/detail/layers.h"
#include "model/detail/recompute.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;

at::Tensor tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t + 1}, gen, at::TensorOptions().dtype(at::kLong));
}

struct StepResult {
  LossPieces losses;
  at::Tensor load;
  std::map<std::string, at::Tensor> grads;
  int recompute_nodes = 0;
};

// Nodes named `name` reachable from `root` in the autograd graph.
int count_nodes(const at::Tensor& root, const std::string& name) {
  std::vector<torch::autograd::Node*> stack{root.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  int count = 0;
  while (!stack.empty()) {
    torch::autograd::Node* node = stack.back();
    stack.pop_back();
    if (node == nullptr || !seen.insert(node).second) continue;
    if (node->name() == name) ++count;
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function.get());
  }
  return count;
}

// One forward_loss + backward of a fresh model (same seed: same weights) under `policy`.
StepResult train_step(const ModelConfig& config, const RecomputePolicy& policy, bool split, const at::Tensor& toks) {
  Model model(config, 21);
  model.train(true);
  model.whole().set_recompute(policy);
  model.set_weight_grad_split(split);
  StepResult r;
  r.losses = model.forward_loss(toks, 0.5);
  r.recompute_nodes = count_nodes(r.losses.loss, "tandem::RecomputeNode");
  r.losses.loss.backward();
  model.set_weight_grad_split(false);
  model.run_queued_weight_grads();
  r.load = model.expert_load();
  for (auto& [name, p] : model.named_parameters()) {
    if (p.grad().defined()) r.grads[name] = p.grad().clone();
  }
  return r;
}

void expect_identical(const StepResult& a, const StepResult& b, const std::string& what) {
  EXPECT_TRUE(at::equal(a.losses.loss, b.losses.loss)) << what;
  EXPECT_TRUE(at::equal(a.losses.lm_loss, b.losses.lm_loss)) << what;
  EXPECT_TRUE(at::equal(a.losses.mtp_loss, b.losses.mtp_loss)) << what;
  EXPECT_TRUE(at::equal(a.losses.aux_loss, b.losses.aux_loss)) << what << ": the logged balance loss counted twice?";
  EXPECT_TRUE(at::equal(a.load, b.load)) << what << ": expert loads counted again by the recomputation?";
  ASSERT_EQ(a.grads.size(), b.grads.size()) << what;
  for (const auto& [name, g] : b.grads) {
    ASSERT_TRUE(a.grads.count(name)) << what << ": no gradient for " << name;
    EXPECT_TRUE(at::equal(a.grads.at(name), g))
        << what << ": " << name << " differs by " << max_abs_diff(a.grads.at(name), g);
  }
}

struct Variant {
  std::string name;
  std::function<void(ModelConfig&)> change;
};

TEST(ModelRecompute, EveryModeIsBitIdenticalToNone) {
  const std::vector<Variant> variants = {{"mla moe+mtp", [](ModelConfig&) {}},
                                         {"mla direct q, tied head, D=2",
                                          [](ModelConfig& c) {
                                            c.q_lora_rank.reset();
                                            c.tie_word_embeddings = true;
                                            c.num_nextn_predict_layers = 2;
                                          }},
                                         {"gqa", [](ModelConfig& c) {
                                            c.attention_type = AttentionType::kGqa;
                                            c.num_attention_heads = 4;
                                            c.num_key_value_heads = 2;
                                          }}};
  const std::vector<std::pair<std::string, RecomputePolicy>> modes = {
      {"selective", {RecomputeMode::kSelective, 0}},
      {"full", {RecomputeMode::kFull, 0}},
      {"full, first 2 layers", {RecomputeMode::kFull, 2}}};
  for (const Variant& variant : variants) {
    ModelConfig c = tiny_config();
    variant.change(c);
    c.validate();
    const at::Tensor toks = tokens(2, 8, c.vocab_size, 5);
    for (bool split : {false, true}) {
      const StepResult none = train_step(c, {}, split, toks);
      EXPECT_EQ(none.recompute_nodes, 0);
      EXPECT_GT(none.load.sum().item<int64_t>(), 0);
      for (const auto& [mode_name, policy] : modes) {
        const std::string what = variant.name + ", " + mode_name + (split ? ", W deferred" : "");
        const StepResult again = train_step(c, policy, split, toks);
        // selective: every decoder layer and MTP block; full: the first `layers` main layers.
        const int expected = policy.selective()
                                 ? static_cast<int>(c.num_hidden_layers + c.num_nextn_predict_layers)
                                 : static_cast<int>(policy.layers > 0 ? policy.layers : c.num_hidden_layers);
        EXPECT_EQ(again.recompute_nodes, expected) << what;
        expect_identical(again, none, what);
      }
    }
    std::printf("[recompute] %s: selective, full and full(2) bit-identical to none (B and B/W)\n",
                variant.name.c_str());
  }
}

TEST(ModelRecompute, NoGradForwardRunsPlain) {
  ModelConfig c = tiny_config();
  Model model(c, 3);
  model.whole().set_recompute({RecomputeMode::kFull, 0});
  const at::Tensor toks = tokens(1, 8, c.vocab_size, 9);
  const torch::NoGradGuard no_grad;
  const LossPieces losses = model.forward_loss(toks);
  EXPECT_FALSE(losses.loss.requires_grad());
  EXPECT_FALSE(losses.loss.grad_fn());
  EXPECT_TRUE(std::isfinite(losses.loss.item<double>()));
}

TEST(ModelRecompute, InputChangedInPlaceBeforeBackwardIsAnError) {
  const at::Tensor w = at::randn({4, 4}).requires_grad_(true);
  at::Tensor x = at::randn({2, 4}).requires_grad_(true);
  at::Tensor input = x * 1.0;  // not a leaf, so it can be changed in place
  detail::ForwardContext ctx;
  const auto out = detail::run_recomputed_in_backward(
      [w](const std::vector<at::Tensor>& in, detail::ForwardContext&) {
        return std::vector<at::Tensor>{at::matmul(in[0], w)};
      },
      {input}, ctx);
  {
    const torch::NoGradGuard no_grad;
    input.add_(1.0);
  }
  try {
    out[0].sum().backward();
    FAIL() << "backward through a recomputed piece whose input changed should throw";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("modified in place"), std::string::npos) << e.what();
  }
}

TEST(ModelRecompute, GradientsReachInputsAndParameters) {
  const at::Tensor w = at::randn({3, 3}, at::kDouble).requires_grad_(true);
  const at::Tensor x = at::randn({2, 3}, at::kDouble).requires_grad_(true);
  int runs = 0;
  const auto piece = [&](const std::vector<at::Tensor>& in, detail::ForwardContext&) {
    ++runs;
    return std::vector<at::Tensor>{at::tanh(at::matmul(in[0], w)), in[0] * 2.0};
  };
  detail::ForwardContext ctx;
  const auto out = detail::run_recomputed_in_backward(piece, {x}, ctx);
  EXPECT_EQ(runs, 1);
  (out[0].sum() + out[1].pow(2).sum()).backward();
  EXPECT_EQ(runs, 2);  // once in forward, once in backward
  const at::Tensor x2 = x.detach().clone().requires_grad_(true);
  const at::Tensor w2 = w.detach().clone().requires_grad_(true);
  (at::tanh(at::matmul(x2, w2)).sum() + (x2 * 2.0).pow(2).sum()).backward();
  EXPECT_TRUE(at::equal(x.grad(), x2.grad()));
  EXPECT_TRUE(at::equal(w.grad(), w2.grad()));
}

}  // namespace
}  // namespace tandem::model
