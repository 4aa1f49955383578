// Parameter sharding metadata helpers (param_sharding.h): slicing, gathering shards back to the
// global tensor, and the reference gradient synchronisation over tp, dp and expert-dp.
#include "parallel/param_sharding.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "parallel/tp_mappings.h"
#include "runtime/error.h"

namespace tandem::parallel {
namespace {

bool trivial(const CommunicatorPtr& comm) { return !comm || comm->size() == 1; }

at::Tensor& materialized_grad(const at::Tensor& param) {
  at::Tensor& grad = param.mutable_grad();
  if (!grad.defined()) grad = at::zeros_like(param);
  return grad;
}

// Sums (then scales by `scale`) the gradients of `params` over `comm` with one flat buffer.
void all_reduce_grads(const std::vector<const ShardedParam*>& params, const CommunicatorPtr& comm, double scale) {
  if (params.empty()) return;
  std::vector<at::Tensor> flat;
  for (const ShardedParam* p : params) flat.push_back(materialized_grad(p->param).reshape({-1}));
  at::Tensor buffer = at::cat(flat);
  if (!trivial(comm)) comm->all_reduce(buffer, ReduceOp::kSum);
  if (scale != 1.0) buffer.mul_(scale);
  int64_t offset = 0;
  for (const ShardedParam* p : params) {
    at::Tensor& grad = materialized_grad(p->param);
    grad.copy_(buffer.narrow(0, offset, grad.numel()).view(grad.sizes()));
    offset += grad.numel();
  }
}

}  // namespace

const char* shard_kind_name(ShardKind kind) {
  switch (kind) {
    case ShardKind::kReplicated: return "replicated";
    case ShardKind::kTensorParallel: return "tensor-parallel";
    case ShardKind::kExpertParallel: return "expert-parallel";
  }
  return "?";
}

at::Tensor ParamSharding::slice_of(const at::Tensor& full) const {
  TANDEM_CHECK(full.sizes().vec() == global_shape, "{}: full tensor {} is not the global shape [{}]", name,
               c10::str(full.sizes()), fmt::join(global_shape, ", "));
  if (kind != ShardKind::kTensorParallel) return full;
  return full.narrow(split_dim, offset, local_shape[split_dim]);
}

std::string ParamSharding::describe() const {
  std::string line = fmt::format("{} {} local [{}] of global [{}]", name, shard_kind_name(kind),
                                 fmt::join(local_shape, ", "), fmt::join(global_shape, ", "));
  if (kind == ShardKind::kTensorParallel)
    line += fmt::format(", dim {} at {} ({} shards)", split_dim, offset, num_shards);
  if (grad_partial_over_tp) line += ", grad partial over tp";
  return line;
}

at::Tensor gather_full(const at::Tensor& local, const ParamSharding& sharding, const CommunicatorPtr& tp) {
  if (sharding.kind != ShardKind::kTensorParallel || sharding.num_shards == 1) return local;
  TANDEM_CHECK(tp && tp->size() == sharding.num_shards, "{}: {} shards need a tp group of that size", sharding.name,
               sharding.num_shards);
  return all_gather_along(local.detach(), *tp, sharding.split_dim);
}

void all_reduce_tp_partial_grads(const std::vector<ShardedParam>& params, const CommunicatorPtr& tp) {
  if (trivial(tp)) return;
  std::vector<const ShardedParam*> partial;
  for (const ShardedParam& p : params) {
    if (p.sharding.grad_partial_over_tp) partial.push_back(&p);
  }
  all_reduce_grads(partial, tp, 1.0);
}

void synchronize_gradients_reference(const std::vector<ShardedParam>& params, const GradSyncGroups& groups) {
  const double dp_size = groups.dp ? groups.dp->size() : 1;
  all_reduce_tp_partial_grads(params, groups.tp);
  std::vector<const ShardedParam*> dense, experts;
  for (const ShardedParam& p : params) {
    (p.sharding.kind == ShardKind::kExpertParallel ? experts : dense).push_back(&p);
  }
  all_reduce_grads(dense, groups.dp, 1.0 / dp_size);
  all_reduce_grads(experts, groups.edp, 1.0 / dp_size);
}

}  // namespace tandem::parallel
