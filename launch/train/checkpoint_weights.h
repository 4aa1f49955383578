// A checkpoint's weights into a model of any layout: each parameter (this rank's tp slice, ep
// share or pipeline stage, under its global name) is cut from the checkpoint's global tensor, so
// a checkpoint written by one layout loads into another. What `tandem generate` and a run with
// checkpoint.init_from start from. Weights only: no optimizer state, step or data position.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "model/model.h"
#include "parallel/param_sharding.h"
#include "runtime/checkpoint_store.h"

namespace tandem::launch {

// The checkpoint `path` names: a step directory (holding manifest.pb) or a checkpoint root, whose
// newest valid checkpoint is taken; verified (sizes and checksums). Throws kInput naming `key`
// (the option or config key that gave the path) when there is none or it is damaged.
runtime::LoadedCheckpoint load_weights_checkpoint(const std::string& path, const std::string& key);

// Copies the fp32 master weights (the parameters where a run kept none) and the routing biases of
// `checkpoint` into `params` and `buffers` (local tensors under global names). Throws kInput
// naming the checkpoint and the tensor when one is missing or its global shape differs.
void load_weights(const runtime::LoadedCheckpoint& checkpoint, const std::vector<parallel::ShardedParam>& params,
                  const std::vector<std::pair<std::string, at::Tensor>>& buffers);
inline void load_model_weights(const runtime::LoadedCheckpoint& checkpoint, model::Model& model) {
  load_weights(checkpoint, model.sharded_parameters(), model.named_buffers());
}

}  // namespace tandem::launch
