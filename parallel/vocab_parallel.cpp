// Vocabulary-parallel embedding and cross-entropy (vocab_parallel.h). The cross-entropy is one
// autograd function whose backward needs no communication: it saves the softmax of its shard.
#include "parallel/vocab_parallel.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "parallel/tp_mappings.h"
#include "runtime/error.h"

namespace tandem::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CommCapsule : torch::CustomClassHolder {
  explicit CommCapsule(CommunicatorPtr c) : comm(std::move(c)) {}
  CommunicatorPtr comm;
};

struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& logits_shard, const at::Tensor& target,
                            int64_t vocab_start, CommunicatorPtr comm) {
    const at::ScalarType compute = at::promote_types(logits_shard.scalar_type(), at::kFloat);
    const at::Tensor logits = logits_shard.to(compute);  // [N, V/tp]
    const int64_t shard = logits.size(1);
    at::Tensor max = std::get<0>(logits.max(-1)).contiguous();  // [N]
    comm->all_reduce(max, ReduceOp::kMax);
    const at::Tensor shifted = logits - max.unsqueeze(1);                                         // [N, V/tp]
    const at::Tensor outside = (target < vocab_start).logical_or(target >= vocab_start + shard);  // [N]
    const at::Tensor local_target = (target - vocab_start).masked_fill(outside, 0);               // [N]
    const at::Tensor exp = shifted.exp();                                                         // [N, V/tp]
    // [N, 2]: sum of exponentials and the target logit (zero unless this rank owns the target).
    at::Tensor sums =
        at::stack({exp.sum(-1), shifted.gather(1, local_target.unsqueeze(1)).squeeze(1).masked_fill(outside, 0.0)}, 1)
            .contiguous();
    comm->all_reduce(sums, ReduceOp::kSum);
    const at::Tensor sum_exp = sums.select(1, 0);  // [N]
    ctx->save_for_backward({exp / sum_exp.unsqueeze(1), local_target, outside});
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits_shard.scalar_type());
    return sum_exp.log() - sums.select(1, 1);  // [N]
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& softmax = saved[0];       // [N, V/tp]
    const at::Tensor& local_target = saved[1];  // [N]
    const at::Tensor& outside = saved[2];       // [N]
    const at::Tensor onehot = at::zeros_like(softmax).scatter_(
        1, local_target.unsqueeze(1), outside.logical_not().unsqueeze(1).to(softmax.scalar_type()));
    const at::Tensor grad = (softmax - onehot) * grads[0].to(softmax.scalar_type()).unsqueeze(1);  // [N, V/tp]
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor vocab_parallel_embedding(const at::Tensor& ids, const at::Tensor& weight_shard, int64_t vocab_start,
                                    const CommunicatorPtr& tp, bool sequence_parallel) {
  if (!tp || tp->size() == 1) return at::embedding(weight_shard, ids);
  const int64_t shard = weight_shard.size(0);
  const at::Tensor outside = (ids < vocab_start).logical_or(ids >= vocab_start + shard);  // [B, T]
  const at::Tensor local_ids = (ids - vocab_start).masked_fill(outside, 0);
  const at::Tensor partial =
      at::embedding(weight_shard, local_ids).masked_fill(outside.unsqueeze(-1), 0.0);  // [B, T, C]
  return sequence_parallel ? reduce_scatter_to_sequence(partial, tp, 1) : reduce_from_tp(partial, tp);
}

at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits_shard, const at::Tensor& target, int64_t vocab_start,
                                        const CommunicatorPtr& tp) {
  TANDEM_CHECK(logits_shard.dim() == 2 && target.dim() == 1 && target.size(0) == logits_shard.size(0),
               "vocab-parallel cross-entropy needs logits [N, V/tp] and targets [N], got {} and {}",
               c10::str(logits_shard.sizes()), c10::str(target.sizes()));
  if (!tp || tp->size() == 1) {
    const at::ScalarType compute = at::promote_types(logits_shard.scalar_type(), at::kFloat);
    return at::cross_entropy_loss(logits_shard.to(compute), target, {}, at::Reduction::None);
  }
  return VocabParallelCrossEntropy::apply(logits_shard, target, vocab_start, tp);
}

}  // namespace tandem::parallel
