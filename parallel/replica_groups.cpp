// ReplicaGroups (see replica_groups.h).
#include "parallel/replica_groups.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "runtime/error.h"

namespace tandem::parallel {
namespace {

int64_t size_of(const CommunicatorPtr& comm) { return comm ? comm->size() : 1; }
int64_t rank_in(const CommunicatorPtr& comm) { return comm ? comm->rank() : 0; }

}  // namespace

int64_t ReplicaGroup::share_begin() const {
  const int64_t used = flat->used_numel();
  const int64_t share = (used + num_replicas - 1) / num_replicas;
  return std::min(used, replica_rank * share);
}

int64_t ReplicaGroup::share_end() const {
  const int64_t used = flat->used_numel();
  const int64_t share = (used + num_replicas - 1) / num_replicas;
  return std::min(used, (replica_rank + 1) * share);
}

ReplicaGroups::ReplicaGroups(std::vector<ShardedParam> params, GradSyncGroups comms, bool shard,
                             const std::function<bool(const std::string&)>& decays, const std::vector<bool>& counted)
    : comms_(std::move(comms)), params_(std::move(params)) {
  TANDEM_CHECK(counted.empty() || counted.size() == params_.size(), "{} counted flags for {} parameters",
               counted.size(), params_.size());
  struct Pending {
    std::string name;
    CommunicatorPtr replicas;
    std::vector<NamedParam> members;
    std::vector<ParamSharding> shardings;
    std::vector<bool> counted;
  };
  Pending dense{"dense", comms_.dp, {}, {}, {}};
  Pending experts{"experts", comms_.edp, {}, {}, {}};
  for (size_t i = 0; i < params_.size(); ++i) {
    const ShardedParam& p = params_[i];
    Pending& target = p.sharding.kind == ShardKind::kExpertParallel ? experts : dense;
    target.members.push_back({p.sharding.name, p.param, decays(p.sharding.name)});
    target.shardings.push_back(p.sharding);
    target.counted.push_back(counted.empty() || counted[i]);
  }
  const bool tp_leader = rank_in(comms_.tp) == 0;
  for (Pending* pending : {&dense, &experts}) {
    if (pending->members.empty()) continue;
    ReplicaGroup group;
    group.name = pending->name;
    group.replicas = pending->replicas;
    group.num_replicas = size_of(pending->replicas);
    group.replica_rank = rank_in(pending->replicas);
    group.flat = std::make_unique<FlatParamGroup>(pending->name, std::move(pending->members),
                                                  shard ? group.num_replicas : 1, shard ? group.replica_rank : 0);
    group.shardings = std::move(pending->shardings);
    const int64_t begin = group.share_begin(), end = group.share_end();
    if (shard) {
      TANDEM_CHECK(begin == group.flat->shard_offset() || begin == end, "group '{}': share {} is not the ZeRO shard {}",
                   group.name, begin, group.flat->shard_offset());
    }
    const std::vector<FlatRange>& ranges = group.flat->ranges();
    for (size_t i = 0; i < ranges.size(); ++i) {
      if (group.shardings[i].kind == ShardKind::kReplicated && !tp_leader) continue;  // tp rank 0 owns it
      if (!pending->counted[i]) continue;  // another copy stands for it
      const int64_t first = std::max(begin, ranges[i].offset);
      const int64_t last = std::min(end, ranges[i].offset + ranges[i].numel);
      if (first < last) group.owned.push_back({i, first, last});
    }
    groups_.push_back(std::move(group));
  }
}

std::vector<FlatParamGroup*> ReplicaGroups::flat_groups() const {
  std::vector<FlatParamGroup*> out;
  for (const ReplicaGroup& group : groups_) out.push_back(group.flat.get());
  return out;
}

int64_t ReplicaGroups::numel() const {
  int64_t total = 0;
  for (const ReplicaGroup& group : groups_) total += group.flat->used_numel();
  return total;
}

void ReplicaGroups::zero_grad() {
  for (ReplicaGroup& group : groups_) group.flat->zero_grad();
}

double ReplicaGroups::owned_grad_square_sum() const {
  std::vector<at::Tensor> partial;  // on the gradients' device: one copy to the host at the end
  for (const ReplicaGroup& group : groups_) {
    // Adjacent owned ranges form one run of the buffer: one reduction per run.
    const at::Tensor& grads = group.flat->grads();
    size_t i = 0;
    while (i < group.owned.size()) {
      const int64_t begin = group.owned[i].begin;
      int64_t end = group.owned[i].end;
      while (++i < group.owned.size() && group.owned[i].begin == end) end = group.owned[i].end;
      partial.push_back(grads.narrow(0, begin, end - begin).pow(2).sum(at::kDouble));
    }
  }
  return partial.empty() ? 0.0 : at::stack(partial).sum().item<double>();
}

void ReplicaGroups::synchronize_gradients_reference() {
  parallel::synchronize_gradients_reference(params_, comms_);
}

}  // namespace tandem::parallel
