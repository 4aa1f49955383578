// Tensor-parallel forms of the model's layers (layers.h): entering and leaving a tensor-parallel
// region, column- and row-parallel linears on top of the B/W-split linear (the weight shard stays
// the leaf, so deferred weight gradients work unchanged), the tensor-parallel SwiGLU and the
// vocab-parallel token embedding. With tp = 1 every function reduces to the single-process one.
#include "model/detail/layers.h"
#include "parallel/tp_mappings.h"
#include "parallel/vocab_parallel.h"

namespace tandem::model::detail {

namespace {
constexpr int64_t kSequenceDim = 1;  // activations are [B, T, C]
}  // namespace

at::Tensor enter_tp_region(const at::Tensor& x, const ForwardContext& ctx) {
  return ctx.sequence_parallel ? parallel::gather_from_sequence(x, ctx.tp, kSequenceDim)
                               : parallel::copy_to_tp(x, ctx.tp);
}

at::Tensor leave_tp_region(const at::Tensor& partial, const ForwardContext& ctx) {
  return ctx.sequence_parallel ? parallel::reduce_scatter_to_sequence(partial, ctx.tp, kSequenceDim)
                               : parallel::reduce_from_tp(partial, ctx.tp);
}

at::Tensor column_parallel_linear(const at::Tensor& x, const at::Tensor& weight_shard, ForwardContext& ctx) {
  return split_linear(enter_tp_region(x, ctx), weight_shard, ctx.queue);
}

at::Tensor row_parallel_linear(const at::Tensor& h, const at::Tensor& weight_shard, ForwardContext& ctx) {
  return leave_tp_region(split_linear(h, weight_shard, ctx.queue), ctx);
}

at::Tensor SwiGLUImpl::forward_parallel(const at::Tensor& x, ForwardContext& ctx) {
  return leave_tp_region(forward(enter_tp_region(x, ctx), ctx), ctx);
}

at::Tensor TokenEmbeddingImpl::forward(const at::Tensor& ids, const ForwardContext& ctx, bool sequence_parallel) {
  return parallel::vocab_parallel_embedding(ids, weight, vocab_start_, ctx.tp, sequence_parallel);
}

}  // namespace tandem::model::detail
