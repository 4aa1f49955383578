// ParallelGroups: the process groups a model is built against. The model is written free of
// parallelism (DESIGN.md section 4); tensor, sequence and expert parallelism are applied from
// outside by handing these groups in. A null communicator means a group of size 1.
//  - tp: attention heads, MLP widths and the vocabulary are split over it (Megatron-style
//    column/row-parallel layers); with sequence_parallel, activations between tensor-parallel
//    regions are split along the sequence over it too.
//  - ep: routed experts are split over it (expert e on ep rank e / (E / ep)); token rows travel
//    by all-to-all (parallel/expert_dispatch.h).
//  - edp, dp: not used by the model's forward/backward; carried for the gradient synchronisation
//    (parallel/param_sharding.h states which gradient is reduced over which group).
// The groups come from parallel::ProcessGrid (tp, ep, edp, dp of this rank).
#pragma once

#include "parallel/communicator.h"

namespace tandem::model {

struct ParallelGroups {
  parallel::CommunicatorPtr tp;    // tensor-parallel peers of this rank (null = size 1)
  parallel::CommunicatorPtr ep;    // expert-parallel peers (null = size 1)
  parallel::CommunicatorPtr edp;   // ranks holding the same experts (expert data parallel)
  parallel::CommunicatorPtr dp;    // data-parallel peers (replicas of the dense weights)
  bool sequence_parallel = false;  // split activations along the sequence over tp (needs tp > 1)

  int tp_size() const { return tp ? tp->size() : 1; }
  int tp_rank() const { return tp ? tp->rank() : 0; }
  int ep_size() const { return ep ? ep->size() : 1; }
  int ep_rank() const { return ep ? ep->rank() : 0; }
};

}  // namespace tandem::model
