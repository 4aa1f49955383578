// Model facade: one Stage spanning the whole network, plus stage views that share its modules
// (make_stages), expert-load bookkeeping and the B/W-split switches.
#include "model/model.h"

#include "model/detail/stage_impl.h"
#include "model/model_size.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace tandem::model {

Model::Model(const ModelConfig& config, uint64_t seed, ParallelGroups groups)
    : config_(config), groups_(std::move(groups)) {
  const StageSpec whole{.index = 0, .num_stages = 1, .layer_begin = 0, .layer_end = config.num_hidden_layers};
  whole_ = Stage::build(config_, seed, groups_, whole);
}

Model::~Model() = default;

const ModelConfig& Model::config() const { return config_; }

std::vector<std::pair<std::string, at::Tensor>> Model::named_parameters() const { return whole_->named_parameters(); }
std::vector<parallel::ShardedParam> Model::sharded_parameters() const { return whole_->sharded_parameters(); }
std::vector<std::pair<std::string, at::Tensor>> Model::named_buffers() const { return whole_->named_buffers(); }

std::vector<at::Tensor> Model::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

LossPieces Model::forward_loss(const at::Tensor& tokens, double loss_scale) {
  return whole_->forward({.tokens = tokens, .hidden = {}, .loss_scale = loss_scale}).losses;
}

at::Tensor Model::forward_logits(const at::Tensor& tokens, const PackedRows& packing) {
  return whole_->impl().main_logits(tokens, packing);
}

std::vector<std::shared_ptr<Stage>> Model::make_stages(int64_t num_stages) {
  std::vector<int64_t> sizes;
  for (const StageSpec& s : partition_layers(config_, num_stages)) sizes.push_back(s.layer_end - s.layer_begin);
  return make_stages(sizes);
}

std::vector<std::shared_ptr<Stage>> Model::make_stages(const std::vector<int64_t>& layers_per_stage) {
  const Stage::Impl& all = whole_->impl();
  std::vector<std::shared_ptr<Stage>> stages;
  for (const StageSpec& spec : partition_layers(config_, layers_per_stage)) {
    auto impl = std::make_unique<Stage::Impl>();
    impl->config = config_;
    impl->spec = spec;
    impl->groups = groups_;
    impl->queue = all.queue;
    impl->objective = all.objective;
    if (impl->needs_embedding()) impl->embed = all.embed;
    for (int64_t layer = spec.layer_begin; layer < spec.layer_end; ++layer) impl->layers.push_back(all.layers[layer]);
    if (spec.is_last()) {
      impl->norm = all.norm;
      impl->head = all.head;
      impl->mtp = all.mtp;
    }
    impl->register_on_root();
    stages.push_back(std::make_shared<Stage>(std::move(impl)));
  }
  return stages;
}

at::Tensor Model::expert_load() const { return whole_->expert_load(); }
void Model::reset_expert_load() { whole_->reset_expert_load(); }
void Model::update_routing_bias(const at::Tensor& counts, double gamma) { whole_->update_routing_bias(counts, gamma); }

void Model::set_weight_grad_split(bool on) { whole_->weight_grad_queue()->set_deferring(on); }
void Model::set_layer_hooks(std::shared_ptr<parallel::LayerHooks> hooks) { whole_->set_layer_hooks(std::move(hooks)); }
void Model::run_queued_weight_grads() { whole_->weight_grad_queue()->run_all(); }
WeightGradQueue& Model::weight_grad_queue() { return *whole_->weight_grad_queue(); }

void Model::train(bool on) { whole_->train(on); }
void Model::to(at::ScalarType dtype) { whole_->to(dtype); }
void Model::to(const at::Device& device) { whole_->to(device); }

Stage& Model::whole() { return *whole_; }

}  // namespace tandem::model
