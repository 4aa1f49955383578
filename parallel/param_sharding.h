// How one rank's parameter relates to the global (single-process) parameter of the same name:
// the metadata checkpointing, export, ZeRO and gradient synchronisation need. A model built over
// tensor/expert-parallel groups holds LOCAL tensors under their GLOBAL (Hugging Face) names:
//  - kReplicated: the whole tensor (every tp rank holds the same values);
//  - kTensorParallel: an even slice of the global tensor along split_dim, starting at offset
//    (tp rank r of num_shards holds [r * local, (r + 1) * local));
//  - kExpertParallel: a whole routed expert's weight; only the ep rank owning expert e holds it
//    (other ep ranks hold other experts under their own names), replicated over expert-dp.
//
// Gradient synchronisation contract (what the data-parallel layer implements; reference
// implementation: synchronize_gradients_reference), after backward and the W queue are done:
//  - dense parameters (kReplicated, kTensorParallel): when grad_partial_over_tp, the local
//    gradient covers only this tp rank's tokens (sequence-parallel norms, the router under token
//    slicing, MLA down-projections under sequence parallelism): sum it over tp first. Then average
//    over dp.
//  - experts (kExpertParallel): sum over the expert-data-parallel group (its ranks routed
//    different tokens to the same expert: tp peers' token slices and dp replicas), divide by dp.
// Every other gradient is already complete on each tp rank (autograd reduces it inside the
// tensor-parallel mappings).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace tandem::parallel {

enum class ShardKind { kReplicated, kTensorParallel, kExpertParallel };
const char* shard_kind_name(ShardKind kind);  // "replicated", "tensor-parallel", "expert-parallel"

struct ParamSharding {
  std::string name;                   // global name, e.g. "model.layers.1.self_attn.o_proj.weight"
  std::vector<int64_t> global_shape;  // shape of the single-process parameter
  std::vector<int64_t> local_shape;   // shape held by this rank
  ShardKind kind = ShardKind::kReplicated;
  int64_t split_dim = -1;             // kTensorParallel: the dimension split over tp
  int64_t offset = 0;                 // kTensorParallel: this rank's first index along split_dim
  int64_t num_shards = 1;             // kTensorParallel: tp size
  bool grad_partial_over_tp = false;  // see the contract above

  // This rank's part of the global tensor `full` (a view; `full` has global_shape).
  at::Tensor slice_of(const at::Tensor& full) const;
  std::string describe() const;  // one line: name, kind, shapes, split
};

struct ShardedParam {
  at::Tensor param;  // the local leaf tensor
  ParamSharding sharding;
};

// The global tensor from the local shards: all-gather over `tp` along split_dim for
// kTensorParallel (collective over tp: every tp rank calls it for the same parameters in the
// same order), the local tensor itself otherwise (tp unused, may be null).
at::Tensor gather_full(const at::Tensor& local, const ParamSharding& sharding, const CommunicatorPtr& tp);

// Sums the gradients of every parameter marked grad_partial_over_tp over `tp`, in place, with one
// all-reduce of a flat buffer (blocking collective over tp; same parameter list on every tp rank).
// Undefined gradients count as zero and are materialised.
void all_reduce_tp_partial_grads(const std::vector<ShardedParam>& params, const CommunicatorPtr& tp);

// The groups a gradient reduction spans (null = size 1).
struct GradSyncGroups {
  CommunicatorPtr tp;
  CommunicatorPtr dp;
  CommunicatorPtr edp;
};

// The contract above, unbucketed and blocking: the oracle the bucketed, overlapped data-parallel
// reduction must match. Materialises undefined gradients as zeros (every rank must contribute).
void synchronize_gradients_reference(const std::vector<ShardedParam>& params, const GradSyncGroups& groups);

}  // namespace tandem::parallel
