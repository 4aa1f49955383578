// Checkpoints of a real (tiny) model for the export and inspect tests, written through the same
// ShardWriter/CheckpointStore path as the trainer: whole tensors from one rank (what the
// data-parallel trainer writes), or every tensor split in row halves over two rank files (what a
// sharded layout writes: global name and shape, a slice per rank).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <map>
#include <string>
#include <vector>

#include "launch/config/config_loader.h"
#include "model/model.h"
#include "runtime/checkpoint_store.h"
#include "runtime/checkpoint_tensors.h"

namespace tandem::launch::testing {

inline JobConfig tiny_job(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> overrides = {
      "model.hidden_size=32",           "model.num_hidden_layers=2",   "model.intermediate_size=48",
      "model.moe_intermediate_size=16", "model.num_attention_heads=2", "model.kv_lora_rank=16",
      "model.qk_nope_head_dim=8",       "model.qk_rope_head_dim=4",    "model.v_head_dim=8",
      "model.vocab_size=320",           "model.initializer_range=0.1", "parallel.pp=1",
      "parallel.pipeline.schedule=1f1b"};
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  return load_job_config(std::string(TANDEM_SOURCE_DIR) + "/configs/tiny_moe.yaml", overrides, 1);
}

struct SavedCheckpoint {
  std::string dir;  // the step directory
  JobConfig config;
  std::map<std::string, at::Tensor> params;   // global name -> full fp32 tensor
  std::map<std::string, at::Tensor> buffers;  // routing biases
};

// The model of `config` with its weights scaled by `scale` (so they differ from a fresh init) and
// non-zero routing biases, saved at `step` under `root` by `num_ranks` (1 or 2) rank files.
inline SavedCheckpoint save_model_checkpoint(const std::string& root, const JobConfig& config, int num_ranks,
                                             int64_t step = 10, double scale = 1.5) {
  torch::autograd::AutoGradMode no_grad(false);
  SavedCheckpoint saved;
  saved.config = config;
  model::Model model(config.model, static_cast<uint64_t>(config.run.seed));
  for (auto& [name, param] : model.named_parameters()) saved.params[name] = param.detach().clone() * scale;
  int64_t i = 0;
  for (auto& [name, buffer] : model.named_buffers()) {
    saved.buffers[name] = at::arange(buffer.numel(), at::kFloat) * 0.001 * static_cast<double>(++i);
  }
  const runtime::CheckpointStore store(root);
  const std::string staging = store.begin(step, 1);
  runtime::CheckpointManifest manifest;
  manifest.step = step;
  manifest.config_yaml = job_config_to_yaml(config);
  manifest.layout.world_size = num_ranks;
  manifest.layout.tp = num_ranks;
  manifest.optimizer_step = step;
  manifest.created_by = "tandem test";
  for (int rank = 0; rank < num_ranks; ++rank) {
    runtime::ShardWriter shard(staging, rank);
    auto append = [&](const std::string& name, runtime::TensorKind kind, const at::Tensor& full) {
      if (num_ranks == 1 || full.dim() == 0 || full.size(0) % 2 != 0) {
        if (rank == 0) runtime::append_tensor(shard, name, kind, full);
        return;
      }
      const int64_t rows = full.size(0) / 2;
      runtime::TensorSlice slice = runtime::TensorSlice::whole(full.sizes().vec());
      slice.offsets[0] = rank * rows;
      slice.lengths[0] = rows;
      runtime::append_tensor(shard, name, kind, full.narrow(0, rank * rows, rows), full.sizes().vec(), slice);
    };
    for (const auto& [name, value] : saved.params) {
      append(name, runtime::TensorKind::kParam, value);
      append(name, runtime::TensorKind::kExpAvg, value * 0.25);
    }
    for (const auto& [name, value] : saved.buffers) append(name, runtime::TensorKind::kBuffer, value);
    manifest.ranks.push_back(shard.finish("", ""));
  }
  saved.dir = store.commit(staging, manifest, 2);
  return saved;
}

}  // namespace tandem::launch::testing
