// Which parameter is split how under tensor/expert parallelism: one rule table from the HF name,
// shared by initialisation (draw the full tensor, keep this rank's slice), the sharding metadata
// the checkpoint/export/ZeRO code reads (Stage::sharded_parameters) and resharding on load.
//  - split along dim 0 (column-parallel, output features / vocabulary rows): embed_tokens,
//    lm_head, q_proj, q_b_proj, kv_b_proj, k_proj, v_proj, and gate_proj/up_proj of the dense MLP
//    and of the shared experts;
//  - split along dim 1 (row-parallel, input features): o_proj, down_proj of the dense MLP and of
//    the shared experts;
//  - expert-parallel: mlp.experts.{e}.* (whole experts, on ep rank e / (E / ep));
//  - replicated: everything else (norms, q_a_proj, kv_a_proj_with_mqa, the router, eh_proj).
// Gradients partial over tp (ParamSharding::grad_partial_over_tp) when tp > 1: the router
// (each tp rank routes its own tokens); with sequence parallelism also the main decoder layers'
// norms, MLA down-projections and their norms, and model.norm (they see one sequence slice).
// MTP modules run without sequence parallelism, so theirs are complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/parallel_groups.h"
#include "parallel/param_sharding.h"

namespace tandem::model {

// The sharding of parameter `name` (HF name) on this rank of `groups`, given the global shape.
// Throws config::KeyError-kind errors when a split dimension is not divisible by tp.
parallel::ParamSharding param_sharding(const std::string& name, const std::vector<int64_t>& global_shape,
                                       const ModelConfig& config, const ParallelGroups& groups);

// The same from the local shape a module allocated (global = local with the split dim * tp).
parallel::ParamSharding param_sharding_from_local(const std::string& name, const std::vector<int64_t>& local_shape,
                                                  const ModelConfig& config, const ParallelGroups& groups);

}  // namespace tandem::model
