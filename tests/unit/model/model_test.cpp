// The assembled model: parameter counts equal model_size's arithmetic, HF names, init as a
// pure function of (seed, name, shape), MTP against a reference and finite differences, the
// inference path, expert load and bias update, and pipeline stages chained one after another
// reproducing the whole model forward and backward.
#include <map>
#include <set>

#include "model/detail/stage_impl.h"
#include "model/model.h"
#include "model/model_size.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using namespace tandem::model::testing;

at::Tensor tokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(vocab, {b, t + 1}, gen, at::TensorOptions().dtype(at::kLong));
}

int64_t numel_sum(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  int64_t n = 0;
  for (const auto& [name, p] : params) n += p.numel();
  return n;
}

TEST(Model, ParameterCountsMatchModelSize) {
  std::vector<ModelConfig> configs;
  for (int variant = 0; variant < 6; ++variant) {
    ModelConfig c = tiny_config();
    if (variant == 1) c.q_lora_rank.reset();
    if (variant == 2) c.attention_type = AttentionType::kGqa, c.num_key_value_heads = 1;
    if (variant == 3) c.tie_word_embeddings = true, c.num_nextn_predict_layers = 2;
    if (variant == 4) c.num_nextn_predict_layers = 0, c.n_shared_experts = 0;
    if (variant == 5) c.n_routed_experts = 0;  // dense only
    c.validate();
    Model model(c, 1);
    const ModelSize size = compute_model_size(c);
    EXPECT_EQ(numel_sum(model.named_parameters()), size.model_params()) << "variant " << variant;
    // Each stage of a 3-way cut, built on its own, holds exactly stage_params.
    for (const StageSpec& spec : partition_layers(c, 3)) {
      auto stage = Stage::build(c, 1, {}, spec);
      EXPECT_EQ(numel_sum(stage->named_parameters()),
                stage_params(c, spec.layer_begin, spec.layer_end, spec.is_first(), spec.is_last()))
          << "variant " << variant << " stage " << spec.index;
    }
  }
  std::printf("[model_size] tiny model: %lld parameters, equal to the module numel sum in 6 variants\n",
              static_cast<long long>(compute_model_size(tiny_config()).model_params()));
}

TEST(Model, HuggingFaceNames) {
  ModelConfig c = tiny_config();
  Model model(c, 1);
  std::set<std::string> names;
  for (const auto& [name, p] : model.named_parameters()) EXPECT_TRUE(names.insert(name).second) << "duplicate " << name;
  for (const char* expected : {"model.embed_tokens.weight",
                               "model.layers.0.input_layernorm.weight",
                               "model.layers.0.post_attention_layernorm.weight",
                               "model.layers.0.self_attn.q_a_proj.weight",
                               "model.layers.0.self_attn.q_a_layernorm.weight",
                               "model.layers.0.self_attn.q_b_proj.weight",
                               "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                               "model.layers.0.self_attn.kv_a_layernorm.weight",
                               "model.layers.0.self_attn.kv_b_proj.weight",
                               "model.layers.0.self_attn.o_proj.weight",
                               "model.layers.0.mlp.gate_proj.weight",
                               "model.layers.0.mlp.up_proj.weight",
                               "model.layers.0.mlp.down_proj.weight",
                               "model.layers.1.mlp.gate.weight",
                               "model.layers.3.mlp.experts.7.down_proj.weight",
                               "model.layers.1.mlp.shared_experts.gate_proj.weight",
                               "model.norm.weight",
                               "lm_head.weight",
                               "model.layers.4.enorm.weight",
                               "model.layers.4.hnorm.weight",
                               "model.layers.4.eh_proj.weight",
                               "model.layers.4.shared_head.norm.weight",
                               "model.layers.4.self_attn.kv_b_proj.weight",
                               "model.layers.4.mlp.experts.0.up_proj.weight"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  std::set<std::string> buffers;
  for (const auto& [name, b] : model.named_buffers()) buffers.insert(name);
  EXPECT_EQ(buffers, (std::set<std::string>{"model.layers.1.mlp.gate.e_score_correction_bias",
                                            "model.layers.2.mlp.gate.e_score_correction_bias",
                                            "model.layers.3.mlp.gate.e_score_correction_bias",
                                            "model.layers.4.mlp.gate.e_score_correction_bias"}));
}

TEST(Model, InitIsAPureFunctionOfSeedNameAndShape) {
  const ModelConfig c = tiny_config();
  Model model(c, 5);
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, p] : model.named_parameters()) by_name[name] = p;
  // Every stage of a 2-way cut, built alone, draws exactly the model's values for its names.
  int64_t compared = 0;
  for (const StageSpec& spec : partition_layers(c, 2)) {
    for (const auto& [name, p] : Stage::build(c, 5, {}, spec)->named_parameters()) {
      EXPECT_TRUE(at::equal(p, by_name.at(name))) << name;
      ++compared;
    }
  }
  EXPECT_GT(compared, static_cast<int64_t>(by_name.size()));  // the last stage's embedding copy too
  EXPECT_TRUE(at::equal(by_name.at("model.norm.weight"), at::ones({c.hidden_size})));
  EXPECT_TRUE(at::equal(by_name.at("model.layers.2.self_attn.kv_a_layernorm.weight"), at::ones({c.kv_lora_rank})));
  const at::Tensor& expert = by_name.at("model.layers.2.mlp.experts.3.up_proj.weight");
  EXPECT_NEAR(expert.std().item<double>(), c.initializer_range, 0.01);
  Model other(c, 6);
  for (const auto& [name, p] : other.named_parameters()) {
    if (name.find("norm") == std::string::npos) {
      EXPECT_FALSE(at::equal(p, by_name.at(name))) << name;
    }
  }
}

// --- MTP -------------------------------------------------------------------------------------

at::Tensor ref_rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt((x * x).mean(-1, true) + eps) * w;
}

TEST(Model, MtpMatchesReferenceAndFiniteDifferences) {
  ModelConfig c = tiny_config();
  c.num_nextn_predict_layers = 2;
  c.aux_loss_alpha = 0;
  c.initializer_range = 0.3;
  Model model(c, 21);
  model.to(at::kDouble);
  const int64_t b = 2, t = 6;
  const at::Tensor toks = tokens(b, t, c.vocab_size, 22);
  Stage::Impl& impl = model.whole().impl();
  const double eps = c.rms_norm_eps;

  // Reference, from docs/model.md#multi-token-prediction, over the model's own decoder blocks (tested elsewhere).
  auto reference = [&] {
    detail::ForwardContext ctx;
    ctx.rope = impl.rope_tables(t, at::kDouble, at::kCPU);
    const at::Tensor& emb_w = impl.embed->weight;
    const at::Tensor& head_w = impl.head->weight;
    at::Tensor h = emb_w.index_select(0, toks.narrow(1, 0, t).reshape(-1)).view({b, t, -1});
    for (auto& layer : impl.layers) h = layer->forward(h, ctx);
    const at::Tensor lm = at::cross_entropy_loss(
        at::matmul(ref_rms(h, impl.norm->weight, eps), head_w.t()).view({b * t, -1}), toks.narrow(1, 1, t).reshape(-1));
    at::Tensor mtp = at::zeros({}, at::kDouble);
    at::Tensor prev = h;
    for (auto& m : impl.mtp) {
      const int64_t k = m->depth(), len = t - k;
      const at::Tensor e = emb_w.index_select(0, toks.narrow(1, k, len).reshape(-1)).view({b, len, -1});
      const at::Tensor in = at::matmul(
          at::cat({ref_rms(e, m->enorm->weight, eps), ref_rms(prev.narrow(1, 0, len), m->hnorm->weight, eps)}, -1),
          m->eh_proj->weight.t());
      const at::Tensor hk = m->block->forward(in, ctx);
      const at::Tensor logits = at::matmul(ref_rms(hk, m->head_norm->weight, eps), head_w.t());
      mtp = mtp + at::cross_entropy_loss(logits.view({b * len, -1}), toks.narrow(1, k + 1, len).reshape(-1));
      prev = hk;
    }
    return std::make_pair(lm, mtp * (c.mtp_loss_weight / 2));
  };
  const auto [ref_lm, ref_mtp] = reference();
  const LossPieces got = model.forward_loss(toks);
  const double fwd = std::max(std::abs(got.lm_loss.item<double>() - ref_lm.item<double>()),
                              std::abs(got.mtp_loss.item<double>() - ref_mtp.item<double>()));
  report("mtp", "loss vs reference (abs err)", fwd);
  EXPECT_LT(fwd, 1e-12);
  EXPECT_GT(got.mtp_loss.item<double>(), 0.1);

  const auto& m1 = impl.mtp[0];
  const auto& m2 = impl.mtp[1];
  const double fd = finite_difference_error(
      [&] { return model.forward_loss(toks).mtp_loss; },
      {m1->eh_proj->weight, m1->enorm->weight, m1->hnorm->weight, m1->head_norm->weight, m2->eh_proj->weight,
       m2->block->mla->q_a_proj->weight, impl.embed->weight, impl.head->weight, impl.layers[3]->mla->o_proj->weight},
      6);
  report("mtp", "grad vs finite diff (rel)", fd);
  EXPECT_LT(fd, 1e-6);
}

TEST(Model, InferenceLogitsAreTheMainHead) {
  const ModelConfig c = tiny_config();
  Model model(c, 31);
  const at::Tensor toks = tokens(2, 8, c.vocab_size, 32);
  model.train(false);
  const LossPieces pieces = model.forward_loss(toks);
  const at::Tensor logits = model.forward_logits(toks.narrow(1, 0, 8));  // [B, T, V]
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 8, c.vocab_size}));
  const at::Tensor lm = at::cross_entropy_loss(logits.reshape({16, -1}), toks.narrow(1, 1, 8).reshape(-1));
  EXPECT_NEAR(lm.item<double>(), pieces.lm_loss.item<double>(), 1e-6);
  EXPECT_EQ(pieces.aux_loss.item<double>(), 0.0);  // no balance loss outside training
  EXPECT_EQ(model.expert_load().sum().item<int64_t>(), 0);
}

TEST(Model, ExpertLoadAndBiasUpdate) {
  const ModelConfig c = tiny_config();
  Model model(c, 41);
  const at::Tensor toks = tokens(2, 8, c.vocab_size, 42);
  model.forward_loss(toks);
  const at::Tensor load = model.expert_load();  // [N + D, E]
  ASSERT_EQ(load.sizes(), (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(load[0].sum().item<int64_t>(), 0);  // dense layer
  for (int64_t layer = 1; layer < 4; ++layer) EXPECT_EQ(load[layer].sum().item<int64_t>(), 2 * 8 * 2);
  EXPECT_EQ(load[4].sum().item<int64_t>(), 2 * 7 * 2);  // MTP block sees T - 1 positions
  model.update_routing_bias(load, 0.25);
  for (const auto& [name, bias] : model.named_buffers()) {
    const int64_t layer = std::stoll(name.substr(13));
    const at::Tensor c_i = load[layer].to(at::kDouble);
    const at::Tensor expected = (at::sign(c_i.mean() - c_i) * 0.25).to(at::kFloat);
    EXPECT_TRUE(at::equal(bias, expected)) << name;
  }
  model.reset_expert_load();
  EXPECT_EQ(model.expert_load().sum().item<int64_t>(), 0);
}

TEST(Model, RunsInBfloat16WithAnFp32RoutingBias) {
  const ModelConfig c = tiny_config();
  Model model(c, 71);
  model.to(at::kBFloat16);
  const at::Tensor toks = tokens(2, 8, c.vocab_size, 72);
  const LossPieces pieces = model.forward_loss(toks);
  pieces.loss.backward();
  EXPECT_TRUE(std::isfinite(pieces.loss.item<double>()));
  EXPECT_NEAR(pieces.lm_loss.item<double>(), std::log(double(c.vocab_size)), 1.0);  // near uniform at init
  for (const auto& [name, b] : model.named_buffers()) EXPECT_EQ(b.scalar_type(), at::kFloat) << name;
  for (const auto& [name, p] : model.named_parameters()) EXPECT_EQ(p.scalar_type(), at::kBFloat16) << name;
  EXPECT_TRUE(model.named_parameters()[0].second.grad().defined());
}

// --- stages ----------------------------------------------------------------------------------

// An objective that records what the head handed it and doubles the next-token loss.
class DoublingObjective final : public Objective {
 public:
  std::string_view name() const override { return "doubling"; }
  LossPieces losses(const ModelConfig& config, const HeadOutput& head) const override {
    rows = head.logits.size(0);
    depths = static_cast<int64_t>(head.targets.size());
    LossPieces p = NextTokenObjective().losses(config, head);
    p.loss = p.loss * 2.0;
    return p;
  }
  mutable int64_t rows = 0;
  mutable int64_t depths = 0;
};

TEST(Model, TheStageComputesItsLossWithItsObjective) {
  ModelConfig c = tiny_config();
  // The balance loss's gradient enters inside the stage, not through the objective's loss.
  c.aux_loss_alpha = 0.0;
  const at::Tensor batch = tokens(2, 6, c.vocab_size, 11);  // T = 6, one MTP depth
  auto gradients = [&](std::shared_ptr<const Objective> objective) {
    Model model(c, 3);
    if (objective) model.whole().set_objective(std::move(objective));
    const LossPieces pieces = model.forward_loss(batch);
    pieces.loss.backward();
    std::map<std::string, at::Tensor> grads;
    for (const auto& [name, p] : model.named_parameters()) {
      if (p.grad().defined()) grads[name] = p.grad().clone();
    }
    return std::make_pair(pieces, grads);
  };
  const auto [plain, plain_grads] = gradients(nullptr);
  auto doubling = std::make_shared<DoublingObjective>();
  const auto [doubled, doubled_grads] = gradients(doubling);
  // The head's rows: B*T for the main head, B*(T-1) for MTP depth 1; one target list per depth.
  EXPECT_EQ(doubling->rows, 2 * 6 + 2 * 5);
  EXPECT_EQ(doubling->depths, 2);
  EXPECT_DOUBLE_EQ(doubled.loss.item<double>(), 2.0 * plain.loss.item<double>());
  EXPECT_DOUBLE_EQ(doubled.lm_loss.item<double>(), plain.lm_loss.item<double>());
  // The default objective is next-token prediction: lm + mtp + aux.
  EXPECT_DOUBLE_EQ(plain.loss.item<double>(), (plain.lm_loss + plain.mtp_loss + plain.aux_loss).item<double>());
  ASSERT_EQ(plain_grads.size(), doubled_grads.size());
  double worst = 0;
  for (const auto& [name, grad] : plain_grads) {
    worst = std::max(worst, max_rel_diff(doubled_grads.at(name), grad * 2.0));
  }
  std::printf("[objective] doubling the loss doubles %zu gradients, worst relative difference %.3g\n",
              plain_grads.size(), worst);
  EXPECT_LT(worst, 1e-6);
}

TEST(ModelStages, PartitionAndPlacement) {
  ModelConfig c = tiny_config();
  c.num_hidden_layers = 7;
  c.validate();
  const auto specs = partition_layers(c, 3);
  EXPECT_EQ(specs[0].layer_end - specs[0].layer_begin, 3);
  EXPECT_EQ(specs[1].layer_end - specs[1].layer_begin, 2);
  EXPECT_EQ(specs[2].layer_begin, 5);
  EXPECT_EQ(specs[2].layer_end, 7);
  EXPECT_THROW(partition_layers(c, std::vector<int64_t>{3, 3}), config::KeyError);
  EXPECT_EQ(dualpipe_stage_assignment(4), (std::vector<std::vector<int64_t>>{{0, 3}, {1, 2}, {2, 1}, {3, 0}}));
  EXPECT_EQ(dualpipev_stage_assignment(4), (std::vector<std::vector<int64_t>>{{0, 7}, {1, 6}, {2, 5}, {3, 4}}));
  EXPECT_EQ(interleaved_stage_assignment(2, 2), (std::vector<std::vector<int64_t>>{{0, 2}, {1, 3}}));
  EXPECT_THROW(dualpipe_stage_assignment(3), config::KeyError);
}

struct StepResult {
  LossPieces losses;
  at::Tensor aux_total;
  std::map<std::string, at::Tensor> grads;
};

std::map<std::string, at::Tensor> collect_grads(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  std::map<std::string, at::Tensor> grads;
  for (const auto& [name, p] : params) {
    if (!p.grad().defined()) continue;
    // A parameter listed by several stages (the embedding copy) is one tensor: count it once.
    if (!grads.count(name)) grads[name] = p.grad().clone();
  }
  return grads;
}

void zero_grads(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  for (const auto& [name, p] : params) p.mutable_grad().reset();
}

// Runs the stages one after another as an executor would: forward with a detached leaf per
// boundary, then backward from the loss, handing each stage's input gradient to the previous.
StepResult run_chained(std::vector<std::shared_ptr<Stage>>& stages, const at::Tensor& toks, double loss_scale,
                       bool defer_w) {
  std::vector<StageOutput> outputs;
  std::vector<at::Tensor> inputs;
  at::Tensor aux = at::zeros({});
  for (auto& stage : stages) {
    StageInput in{.tokens = toks, .hidden = {}, .loss_scale = loss_scale};
    if (!outputs.empty()) in.hidden = outputs.back().hidden.detach().requires_grad_();
    inputs.push_back(in.hidden);
    outputs.push_back(stage->forward(in));
    aux = aux + outputs.back().aux_loss;
  }
  StepResult r;
  r.losses = outputs.back().losses;
  r.aux_total = aux;
  const auto s = static_cast<int64_t>(stages.size());
  stages[s - 1]->backward({r.losses.loss}, {at::full({}, loss_scale, r.losses.loss.options())}, defer_w);
  for (int64_t i = s - 2; i >= 0; --i) stages[i]->backward({outputs[i].hidden}, {inputs[i + 1].grad()}, defer_w);
  for (auto& stage : stages) stage->weight_grad_queue()->run_all();
  return r;
}

TEST(ModelStages, ChainedStagesEqualTheWholeModel) {
  const ModelConfig c = tiny_config();
  Model model(c, 51);
  const at::Tensor toks = tokens(2, 8, c.vocab_size, 52);
  const double scale = 0.5;
  const auto params = model.named_parameters();

  zero_grads(params);
  const LossPieces whole = model.forward_loss(toks, scale);
  (whole.loss * scale).backward();
  const auto whole_grads = collect_grads(params);

  double worst_loss = 0, worst_grad = 0;
  const std::vector<std::vector<int64_t>> cuts{{4}, {2, 2}, {1, 2, 1}, {1, 1, 1, 1}, {0, 1, 0, 2, 1, 0, 0, 0}};
  for (const auto& cut : cuts) {
    for (bool defer : {false, true}) {
      auto stages = model.make_stages(cut);
      zero_grads(params);
      const StepResult r = run_chained(stages, toks, scale, defer);
      const double loss_err = std::max({std::abs(r.losses.lm_loss.item<double>() - whole.lm_loss.item<double>()),
                                        std::abs(r.losses.mtp_loss.item<double>() - whole.mtp_loss.item<double>()),
                                        std::abs(r.aux_total.item<double>() - whole.aux_loss.item<double>())});
      worst_loss = std::max(worst_loss, loss_err);
      const auto grads = collect_grads(params);
      ASSERT_EQ(grads.size(), whole_grads.size()) << cut.size() << " stages";
      for (const auto& [name, g] : whole_grads) {
        const double err = max_rel_diff(grads.at(name), g);
        worst_grad = std::max(worst_grad, err);
        EXPECT_LT(err, 1e-6) << name << " with " << cut.size() << " stages";
      }
    }
  }
  EXPECT_GT(whole.aux_loss.item<double>(), 0.0);
  report("stages", "chained vs whole: loss max abs err", worst_loss);
  report("stages", "chained vs whole: grad max rel err", worst_grad);
  EXPECT_LT(worst_loss, 1e-6);
  // With even partition helpers and every stage count up to the number of layers.
  for (int64_t s = 1; s <= 4; ++s) EXPECT_EQ(static_cast<int64_t>(model.make_stages(s).size()), s);
}

TEST(ModelStages, IndependentlyBuiltStagesEqualTheWholeModel) {
  // Pipeline ranks build only their own stages; the last stage's embedding copy receives the
  // MTP part of the embedding gradient, to be summed with stage 0's by the executor.
  const ModelConfig c = tiny_config();
  Model model(c, 61);
  const at::Tensor toks = tokens(2, 8, c.vocab_size, 62);
  const auto params = model.named_parameters();
  zero_grads(params);
  const LossPieces whole = model.forward_loss(toks);
  whole.loss.backward();
  const auto whole_grads = collect_grads(params);

  std::vector<std::shared_ptr<Stage>> stages;
  for (const StageSpec& spec : partition_layers(c, 3)) stages.push_back(Stage::build(c, 61, {}, spec));
  const StepResult r = run_chained(stages, toks, 1.0, true);
  const double loss_err = std::abs(r.losses.loss.item<double>() + (r.aux_total - r.losses.aux_loss).item<double>() -
                                   whole.loss.item<double>());
  std::map<std::string, at::Tensor> grads;
  for (auto& stage : stages) {
    for (const auto& [name, p] : stage->named_parameters()) {
      if (!p.grad().defined()) continue;
      grads[name] = grads.count(name) ? grads[name] + p.grad() : p.grad().clone();  // sum the copies
    }
  }
  double worst = 0;
  for (const auto& [name, g] : whole_grads) worst = std::max(worst, max_rel_diff(grads.at(name), g));
  report("stages", "built stages vs whole: loss abs err", loss_err);
  report("stages", "built stages vs whole: grad max rel err", worst);
  EXPECT_LT(loss_err, 1e-6);
  EXPECT_LT(worst, 1e-6);
}

}  // namespace
}  // namespace tandem::model
