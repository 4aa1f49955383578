// The tensor/expert-parallel sharding rules (model/sharding.h) and a model built for one rank of
// a tp/ep layout without running it (construction never communicates): local shapes follow the
// rule table, every shard is the slice of the single-process parameter (layout-free init), and
// each rank of an ep group holds its own experts under their global names.
#include "model/sharding.h"

#include <set>

#include "model/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace tandem::model {
namespace {

using parallel::ShardKind;

// A communicator that only knows its rank and size: enough to build a sharded model.
class ShapeOnlyCommunicator : public parallel::Communicator {
 public:
  ShapeOnlyCommunicator(int rank, int size, std::string name) : rank_(rank), size_(size), name_(std::move(name)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  std::string backend() const override { return "none"; }
  parallel::WorkHandle all_reduce_async(at::Tensor, parallel::ReduceOp, parallel::OpOptions) override { fail(); }
  parallel::WorkHandle all_gather_async(at::Tensor, at::Tensor, parallel::OpOptions) override { fail(); }
  parallel::WorkHandle reduce_scatter_async(at::Tensor, at::Tensor, parallel::ReduceOp, parallel::OpOptions) override {
    fail();
  }
  parallel::WorkHandle broadcast_async(at::Tensor, int, parallel::OpOptions) override { fail(); }
  parallel::WorkHandle all_to_all_async(at::Tensor, at::Tensor, std::vector<int64_t>, std::vector<int64_t>,
                                        parallel::OpOptions) override {
    fail();
  }
  parallel::WorkHandle send_async(at::Tensor, int, int, parallel::OpOptions) override { fail(); }
  parallel::WorkHandle recv_async(at::Tensor, int, int, parallel::OpOptions) override { fail(); }
  parallel::WorkHandle barrier_async() override { fail(); }
  void abort(const std::string&) override {}

 private:
  [[noreturn]] static void fail() { throw std::logic_error("a sharding test must not communicate"); }
  int rank_, size_;
  std::string name_;
};

ParallelGroups groups(int tp_rank, int tp, int ep_rank, int ep, bool sp) {
  ParallelGroups g;
  if (tp > 1) g.tp = std::make_shared<ShapeOnlyCommunicator>(tp_rank, tp, "tp");
  if (ep > 1) g.ep = std::make_shared<ShapeOnlyCommunicator>(ep_rank, ep, "ep");
  g.sequence_parallel = sp;
  return g;
}

TEST(Sharding, RuleTable) {
  const ModelConfig c = testing::tiny_config();  // 4 layers + 1 MTP block (layer 4)
  const ParallelGroups g = groups(/*tp_rank=*/2, 4, 0, 1, /*sp=*/true);
  auto rule = [&](const std::string& name, std::vector<int64_t> shape) { return param_sharding(name, shape, c, g); };

  const auto q_b = rule("model.layers.1.self_attn.q_b_proj.weight", {48, 16});
  EXPECT_EQ(q_b.kind, ShardKind::kTensorParallel);
  EXPECT_EQ(q_b.split_dim, 0);
  EXPECT_EQ(q_b.local_shape, (std::vector<int64_t>{12, 16}));
  EXPECT_EQ(q_b.offset, 24);
  const auto o = rule("model.layers.1.self_attn.o_proj.weight", {32, 16});
  EXPECT_EQ(o.split_dim, 1);
  EXPECT_EQ(o.offset, 8);
  EXPECT_EQ(rule("model.layers.1.mlp.shared_experts.down_proj.weight", {32, 16}).split_dim, 1);
  EXPECT_EQ(rule("model.layers.0.mlp.up_proj.weight", {48, 32}).split_dim, 0);
  EXPECT_EQ(rule("lm_head.weight", {64, 32}).split_dim, 0);
  EXPECT_EQ(rule("model.embed_tokens.weight", {64, 32}).split_dim, 0);
  const auto expert = rule("model.layers.1.mlp.experts.3.gate_proj.weight", {16, 32});
  EXPECT_EQ(expert.kind, ShardKind::kExpertParallel);
  EXPECT_EQ(expert.local_shape, expert.global_shape);
  // Replicated; partial over tp where each rank sees only its tokens.
  for (const char* name : {"model.layers.1.mlp.gate.weight", "model.layers.4.mlp.gate.weight",
                           "model.layers.0.input_layernorm.weight", "model.layers.2.self_attn.q_a_proj.weight",
                           "model.layers.2.self_attn.kv_a_layernorm.weight", "model.norm.weight"}) {
    const auto s = rule(name, {16});
    EXPECT_EQ(s.kind, ShardKind::kReplicated) << name;
    EXPECT_TRUE(s.grad_partial_over_tp) << name;
  }
  // MTP modules never run sequence-parallel: complete gradients.
  for (const char* name :
       {"model.layers.4.input_layernorm.weight", "model.layers.4.self_attn.q_a_proj.weight",
        "model.layers.4.enorm.weight", "model.layers.4.eh_proj.weight", "model.layers.4.shared_head.norm.weight"}) {
    const auto s = rule(name, {16});
    EXPECT_EQ(s.kind, ShardKind::kReplicated) << name;
    EXPECT_FALSE(s.grad_partial_over_tp) << name;
  }
  // Without sequence parallelism only the router is partial.
  const ParallelGroups no_sp = groups(2, 4, 0, 1, false);
  EXPECT_FALSE(param_sharding("model.layers.0.input_layernorm.weight", {32}, c, no_sp).grad_partial_over_tp);
  EXPECT_TRUE(param_sharding("model.layers.1.mlp.gate.weight", {8, 32}, c, no_sp).grad_partial_over_tp);
  EXPECT_THROW(rule("model.layers.1.self_attn.q_b_proj.weight", {50, 16}), Error);  // 50 % 4 != 0
}

TEST(Sharding, ShardsAreSlicesOfTheSingleProcessWeights) {
  const ModelConfig c = testing::tiny_config();
  Model whole(c, 5);
  std::map<std::string, at::Tensor> full;
  for (const auto& [name, p] : whole.named_parameters()) full[name] = p;
  for (const auto& [sp, tp_rank, ep_rank] : {std::tuple{false, 1, 1}, std::tuple{true, 0, 2}}) {
    const ParallelGroups g = groups(tp_rank, 2, ep_rank, 4, sp);
    Model shard(c, 5, g);
    std::set<std::string> experts;
    for (const auto& [param, s] : shard.sharded_parameters()) {
      ASSERT_TRUE(full.count(s.name)) << s.name;
      EXPECT_EQ(param.sizes().vec(), s.local_shape) << s.name;
      EXPECT_EQ(full.at(s.name).sizes().vec(), s.global_shape) << s.name;
      EXPECT_TRUE(at::equal(param, s.slice_of(full.at(s.name)))) << s.name;
      if (s.kind == ShardKind::kExpertParallel && s.name.starts_with("model.layers.1.")) experts.insert(s.name);
    }
    // 8 experts over ep 4: this rank holds experts 2 * ep_rank and 2 * ep_rank + 1 (3 weights each).
    EXPECT_EQ(experts.size(), 6u);
    EXPECT_TRUE(experts.count("model.layers.1.mlp.experts." + std::to_string(2 * ep_rank + 1) + ".up_proj.weight"));
  }
}

TEST(Sharding, SingleProcessParametersAreReplicatedOrExperts) {
  Model model(testing::tiny_config(), 1);
  for (const auto& [param, s] : model.sharded_parameters()) {
    EXPECT_NE(s.kind, ShardKind::kTensorParallel) << s.name;
    EXPECT_FALSE(s.grad_partial_over_tp) << s.name;
    EXPECT_EQ(s.local_shape, s.global_shape) << s.name;
  }
}

}  // namespace
}  // namespace tandem::model
