// Tensor-parallel mappings as autograd functions (tp_mappings.h). The communicator rides in the
// autograd context as a capsule; the along-dimension collectives move `dim` to the front so that
// rank i's slice is a contiguous block of the communicator's flat buffer.
#include "parallel/tp_mappings.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "runtime/error.h"

namespace tandem::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool trivial(const CommunicatorPtr& tp) { return !tp || tp->size() == 1; }

struct CommCapsule : torch::CustomClassHolder {
  explicit CommCapsule(CommunicatorPtr c) : comm(std::move(c)) {}
  CommunicatorPtr comm;
};

void save_comm(AutogradContext* ctx, const CommunicatorPtr& comm, int64_t dim) {
  ctx->saved_data["comm"] = c10::IValue::make_capsule(c10::make_intrusive<CommCapsule>(comm));
  ctx->saved_data["dim"] = dim;
}

Communicator& comm_of(AutogradContext* ctx) {
  return *c10::static_intrusive_pointer_cast<CommCapsule>(ctx->saved_data["comm"].toCapsule())->comm;
}

int64_t dim_of(AutogradContext* ctx) { return ctx->saved_data["dim"].toInt(); }

at::Tensor all_reduced(const at::Tensor& x, Communicator& comm) {
  at::Tensor out = x.contiguous().clone();
  comm.all_reduce(out, ReduceOp::kSum);
  return out;
}

at::Tensor own_slice(const at::Tensor& x, Communicator& comm, int64_t dim) {
  const int64_t size = x.size(dim);
  TANDEM_CHECK_INPUT(size % comm.size() == 0, "cannot split dimension {} of size {} into {} equal '{}' slices", dim,
                     size, comm.size(), comm.name());
  const int64_t len = size / comm.size();
  return x.narrow(dim, comm.rank() * len, len).contiguous();
}

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm) {
    save_comm(ctx, comm, 0);
    return x;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_reduced(grads[0], comm_of(ctx)), at::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm) {
    return all_reduced(x, *comm);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) { return {grads[0], at::Tensor()}; }
};

struct ScatterToSequence : torch::autograd::Function<ScatterToSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm, int64_t dim) {
    save_comm(ctx, comm, dim);
    return own_slice(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_along(grads[0], comm_of(ctx), dim_of(ctx)), at::Tensor(), at::Tensor()};
  }
};

struct GatherFromSequence : torch::autograd::Function<GatherFromSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm, int64_t dim) {
    save_comm(ctx, comm, dim);
    return all_gather_along(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {reduce_scatter_along(grads[0], comm_of(ctx), dim_of(ctx)), at::Tensor(), at::Tensor()};
  }
};

struct ReduceScatterToSequence : torch::autograd::Function<ReduceScatterToSequence> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm, int64_t dim) {
    save_comm(ctx, comm, dim);
    return reduce_scatter_along(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {all_gather_along(grads[0], comm_of(ctx), dim_of(ctx)), at::Tensor(), at::Tensor()};
  }
};

struct GatherToReplicated : torch::autograd::Function<GatherToReplicated> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, CommunicatorPtr comm, int64_t dim) {
    save_comm(ctx, comm, dim);
    return all_gather_along(x, *comm, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {own_slice(grads[0], comm_of(ctx), dim_of(ctx)), at::Tensor(), at::Tensor()};
  }
};

int64_t wrap_dim(const at::Tensor& x, int64_t dim) {
  const int64_t rank = x.dim();
  TANDEM_CHECK(dim >= -rank && dim < rank, "dimension {} out of range for a {}-d tensor", dim, rank);
  return dim < 0 ? dim + rank : dim;
}

}  // namespace

at::Tensor all_gather_along(const at::Tensor& x, Communicator& comm, int64_t dim) {
  dim = wrap_dim(x, dim);
  const at::Tensor input = x.contiguous();
  std::vector<int64_t> stacked_shape{comm.size()};
  stacked_shape.insert(stacked_shape.end(), input.sizes().begin(), input.sizes().end());
  at::Tensor stacked = at::empty(stacked_shape, input.options());  // [tp, ...x]
  comm.all_gather(stacked, input);
  std::vector<int64_t> out_shape = input.sizes().vec();
  out_shape[dim] *= comm.size();
  return stacked.movedim(0, dim).reshape(out_shape);  // [..., tp * x.size(dim), ...]
}

at::Tensor reduce_scatter_along(const at::Tensor& x, Communicator& comm, int64_t dim) {
  dim = wrap_dim(x, dim);
  const int64_t size = x.size(dim);
  TANDEM_CHECK_INPUT(size % comm.size() == 0, "cannot reduce-scatter dimension {} of size {} over {} '{}' ranks", dim,
                     size, comm.size(), comm.name());
  std::vector<int64_t> split_shape = x.sizes().vec();
  split_shape[dim] = size / comm.size();
  split_shape.insert(split_shape.begin() + dim, comm.size());
  const at::Tensor blocks = x.reshape(split_shape).movedim(dim, 0).contiguous();  // [tp, ..., len, ...]
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape[dim] = size / comm.size();
  at::Tensor out = at::empty(out_shape, x.options());
  comm.reduce_scatter(out, blocks, ReduceOp::kSum);
  return out;
}

RowRange even_row_range(int64_t total, int64_t size, int64_t rank) {
  const int64_t base = total / size;
  const int64_t extra = total % size;
  return {.begin = rank * base + std::min(rank, extra), .count = base + (rank < extra ? 1 : 0)};
}

at::Tensor copy_to_tp(const at::Tensor& x, const CommunicatorPtr& tp) {
  return trivial(tp) ? x : CopyToTp::apply(x, tp);
}

at::Tensor reduce_from_tp(const at::Tensor& x, const CommunicatorPtr& tp) {
  return trivial(tp) ? x : ReduceFromTp::apply(x, tp);
}

at::Tensor scatter_to_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim) {
  return trivial(tp) ? x : ScatterToSequence::apply(x, tp, wrap_dim(x, dim));
}

at::Tensor gather_from_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim) {
  return trivial(tp) ? x : GatherFromSequence::apply(x, tp, wrap_dim(x, dim));
}

at::Tensor reduce_scatter_to_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim) {
  return trivial(tp) ? x : ReduceScatterToSequence::apply(x, tp, wrap_dim(x, dim));
}

at::Tensor gather_to_replicated(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim) {
  return trivial(tp) ? x : GatherToReplicated::apply(x, tp, wrap_dim(x, dim));
}

}  // namespace tandem::parallel
