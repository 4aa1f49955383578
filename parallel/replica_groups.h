// ReplicaGroups: one rank's trainable parameters moved into flat buffers, one buffer per set of
// ranks that hold copies of them (the replication group):
//  - "dense": every parameter that is not a routed expert (whole, or its tensor-parallel shard),
//    replicated over the data-parallel group dp;
//  - "experts": this rank's routed experts, replicated over the expert-data-parallel group edp.
// Ownership: each rank owns an even, contiguous share of its group's flat range (share r of
// replica r; the ZeRO shard when the buffers are sharded), except that tp ranks other than 0 own
// nothing of the parameters replicated over tp. So every element of the global model is owned
// by exactly one rank of the job: the global gradient norm sums the owned squares over all ranks,
// and a checkpoint stores each element once, written by its owner under the global name and
// shape (copies marked as not counted are owned by nobody) (TensorSlice::flat_range turns an owned range into boxes of the global tensor).
// Not thread-safe. The groups keep the parameters' identities (same autograd leaves).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/flat_params.h"
#include "parallel/param_sharding.h"

namespace tandem::parallel {

// A piece of one parameter that this rank owns: flat elements [begin, end) of its group.
struct OwnedRange {
  size_t param = 0;  // index into the group's ranges() / shardings
  int64_t begin = 0;
  int64_t end = 0;
};

struct ReplicaGroup {
  std::string name;                       // "dense" or "experts"
  std::unique_ptr<FlatParamGroup> flat;   // sharded over the replicas when built with shard = true
  std::vector<ParamSharding> shardings;   // by flat->ranges() index
  CommunicatorPtr replicas;               // dp or edp; null when the group has one replica
  int64_t num_replicas = 1;
  int64_t replica_rank = 0;
  std::vector<OwnedRange> owned;          // ascending, disjoint

  // This rank's even share of the flat range [0, used): replica r owns
  // [r * ceil(used / n), min(used, (r + 1) * ceil(used / n))), equal to the ZeRO shard.
  int64_t share_begin() const;
  int64_t share_end() const;
};

class ReplicaGroups {
 public:
  // Sorts `params` (a model's or a stage's sharded_parameters()) into the dense and the expert
  // group (a group with no parameters is left out) and moves them into flat buffers; with
  // `shard` the buffers are sharded over each group's replicas (ZeRO >= 1: AdamW then keeps
  // moments of the shard only). `decays(global name)` says whether weight decay applies.
  // `comms` holds this rank's tp, dp and edp groups (null = size 1). `counted[i]` false marks
  // params[i] as a copy that does not stand for its global parameter (a pipeline keeps several
  // copies of some parameters in sync: DualPipe's two copies of each stage, the embedding of the
  // first and last stages): no rank owns its elements, so norms and checkpoints see the global
  // parameter once, through its counted copy. Empty: every parameter counts. No communication.
  ReplicaGroups(std::vector<ShardedParam> params, GradSyncGroups comms, bool shard,
                const std::function<bool(const std::string&)>& decays, const std::vector<bool>& counted = {});

  std::vector<ReplicaGroup>& groups() { return groups_; }
  const std::vector<ReplicaGroup>& groups() const { return groups_; }
  std::vector<FlatParamGroup*> flat_groups() const;
  const std::vector<ShardedParam>& params() const { return params_; }  // leaves now in the buffers
  const GradSyncGroups& comms() const { return comms_; }
  int64_t numel() const;  // parameters held by this rank (unpadded)

  void zero_grad();
  // The sum of squares of the gradients this rank owns (no communication): the global norm is
  // the square root of its sum over all ranks of the job.
  double owned_grad_square_sum() const;
  // The reference data-parallel synchronisation (synchronize_gradients_reference): blocking,
  // unbucketed, leaves complete gradients in every replica's buffers.
  void synchronize_gradients_reference();

 private:
  GradSyncGroups comms_;
  std::vector<ShardedParam> params_;
  std::vector<ReplicaGroup> groups_;
};

}  // namespace tandem::parallel
