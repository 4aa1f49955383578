// Model: the whole DeepSeek-V3-style transformer in one process, the object the single-process
// trainer drives. It is one Stage spanning every layer plus conveniences; make_stages() cuts
// it into pipeline stages that share its parameters (so chaining them must reproduce it
// exactly). Parameter names are the Hugging Face DeepseekV3 state-dict names (docs/model.md#hugging-face-names), MTP
// modules as extra layers N..N+D-1, so export is a rename-free write.
// Not thread-safe: one thread drives forward/backward (the autograd engine may use others).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/model_config.h"
#include "model/parallel_groups.h"
#include "model/stage.h"

namespace tandem::model {

class Model {
 public:
  // Validates `config` (throws config::KeyError) and builds every module, parameters drawn from
  // (seed, HF name, full shape) and sliced to this rank's shard of `groups`. fp32 parameters on
  // CPU; use to() for other dtypes.
  Model(const ModelConfig& config, uint64_t seed, ParallelGroups groups = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;

  // Local tensors under global names; see Stage::named_parameters / sharded_parameters.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<parallel::ShardedParam> sharded_parameters() const;
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const;
  std::vector<at::Tensor> parameters() const;

  // tokens [B, T+1] int64. Main model on tokens[:, :T] predicting tokens[:, 1:], MTP depth k on
  // the first T-k positions predicting k+1 ahead. `loss_scale`: see StageInput.
  LossPieces forward_loss(const at::Tensor& tokens, double loss_scale = 1.0);
  // Inference path (MTP inactive): tokens [B, T] -> logits [B, T, vocab]; under tensor
  // parallelism this rank's vocabulary columns [B, T, vocab / tp] (no rank holds them all).
  // `packing`: several samples per row (see PackedRows in model/stage.h).
  at::Tensor forward_logits(const at::Tensor& tokens, const PackedRows& packing = {});

  // Pipeline stages over this model's parameters (partition_layers rule or explicit sizes).
  // The stages share the model's weight-gradient queue.
  std::vector<std::shared_ptr<Stage>> make_stages(int64_t num_stages);
  std::vector<std::shared_ptr<Stage>> make_stages(const std::vector<int64_t>& layers_per_stage);

  // Expert load since the last reset ([N + D, E] int64) and the auxiliary-loss-free update.
  at::Tensor expert_load() const;
  void reset_expert_load();
  void update_routing_bias(const at::Tensor& counts, double gamma = -1.0);

  // B/W split: while on, backward leaves the weight gradients of split layers (every linear
  // except the embedding) in the queue; run_queued_weight_grads() computes them into .grad.
  void set_weight_grad_split(bool on);
  // Stage::set_layer_hooks on the stage spanning the model (stages made later need their own).
  void set_layer_hooks(std::shared_ptr<parallel::LayerHooks> hooks);
  void run_queued_weight_grads();
  WeightGradQueue& weight_grad_queue();

  void train(bool on);
  void to(at::ScalarType dtype);
  void to(const at::Device& device);  // see Stage::to(device)

  Stage& whole();  // the single stage spanning the model

 private:
  ModelConfig config_;
  ParallelGroups groups_;
  std::shared_ptr<Stage> whole_;
};

}  // namespace tandem::model
