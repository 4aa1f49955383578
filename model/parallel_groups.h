// ParallelGroups: the process groups a model is built against. The model is written free of
// parallelism (DESIGN.md section 4); tensor and expert parallelism are applied from outside by
// handing these groups in. A null communicator means a group of size 1 (one process), which is
// all the model supports until the parallel runtime lands (issue 7): TP will shard heads and
// MLP widths over `tp`, EP the routed experts over `ep` (dispatch/combine hook between routing
// and the expert computation, see moe.h), with expert gradients reduced over `edp`.
#pragma once

#include "parallel/communicator.h"

namespace tandem::model {

struct ParallelGroups {
  parallel::CommunicatorPtr tp;   // tensor-parallel peers of this rank (null = size 1)
  parallel::CommunicatorPtr ep;   // expert-parallel peers (null = size 1)
  parallel::CommunicatorPtr edp;  // ranks holding the same experts (expert data parallel)
  parallel::CommunicatorPtr dp;   // data-parallel peers (replicas of the dense weights)

  int tp_size() const { return tp ? tp->size() : 1; }
  int tp_rank() const { return tp ? tp->rank() : 0; }
  int ep_size() const { return ep ? ep->size() : 1; }
  int ep_rank() const { return ep ? ep->rank() : 0; }
};

}  // namespace tandem::model
