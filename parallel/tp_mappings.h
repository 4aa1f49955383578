// The tensor-parallel vocabulary (Megatron-LM's mappings): differentiable functions that move an
// activation into or out of a tensor-parallel region, each forward collective paired with its
// backward dual so that gradients stay exact:
//
//   function                     forward                      backward
//   copy_to_tp                   identity                     all-reduce (sum)
//   reduce_from_tp               all-reduce (sum)             identity
//   scatter_to_sequence          keep this rank's slice       all-gather
//   gather_from_sequence         all-gather                   reduce-scatter (sum)
//   reduce_scatter_to_sequence   reduce-scatter (sum)         all-gather
//   gather_to_replicated         all-gather                   keep this rank's slice
//
// Conventions: `tp` is the tensor-parallel communicator; null or size 1 makes every function the
// identity (no copy, no graph node). "Sequence" functions split `dim` into tp equal slices, rank i
// holding slice i (dim must be divisible by tp: a kInput error otherwise). A replicated tensor is
// one every tp rank holds identically (and whose gradient every rank computes identically);
// gather_from_sequence is for consumers whose gradients are partial sums over tp (column-parallel
// layers), gather_to_replicated for consumers that compute replicated gradients.
// Collective ordering: each call issues its collective (forward now, backward when autograd
// reaches it) on `tp`; every tp rank must make the same calls in the same order, which holds when
// the ranks run the same model code. All calls block (the collective completes before return).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace tandem::parallel {

at::Tensor copy_to_tp(const at::Tensor& x, const CommunicatorPtr& tp);
at::Tensor reduce_from_tp(const at::Tensor& x, const CommunicatorPtr& tp);
at::Tensor scatter_to_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim);
at::Tensor gather_from_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim);
at::Tensor reduce_scatter_to_sequence(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim);
at::Tensor gather_to_replicated(const at::Tensor& x, const CommunicatorPtr& tp, int64_t dim);

// Plain (non-differentiable) collectives along a dimension, used by the functions above and by
// parameter gathering: all-gather concatenating along `dim`, reduce-scatter (sum) splitting `dim`.
at::Tensor all_gather_along(const at::Tensor& x, Communicator& comm, int64_t dim);
at::Tensor reduce_scatter_along(const at::Tensor& x, Communicator& comm, int64_t dim);

// Rows [begin, begin + count) of `total` that rank `rank` of `size` owns when rows are split as
// evenly as possible, the first total % size ranks taking one more.
struct RowRange {
  int64_t begin = 0;
  int64_t count = 0;
};
RowRange even_row_range(int64_t total, int64_t size, int64_t rank);

}  // namespace tandem::parallel
