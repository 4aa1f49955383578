// Vocabulary-parallel embedding lookup and cross-entropy: each tensor-parallel rank holds the
// rows [vocab_start, vocab_start + V/tp) of the embedding (or output-head) matrix, and no rank
// ever materialises a full-vocabulary row of logits.
// Invariants: shards are equal (vocab_size % tp == 0, validated by the job config and the model);
// token ids and targets are replicated over tp; results are replicated over tp (or, for the
// sequence-parallel lookup, split along the sequence like every sequence-parallel activation).
// Both functions are collective over `tp` (blocking; same call order on every tp rank). A null or
// size-1 `tp` gives the plain single-process computation.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace tandem::parallel {

// ids [B, T] int64 (global vocabulary ids), weight_shard [V/tp, C] -> embeddings [B, T, C]
// replicated over tp, or [B, T/tp, C] (this rank's sequence slice, T % tp == 0) when
// `sequence_parallel`. Ids outside the shard contribute zeros; the sum over tp (all-reduce, or
// reduce-scatter under sequence parallelism) restores every row. Differentiable w.r.t. the shard.
at::Tensor vocab_parallel_embedding(const at::Tensor& ids, const at::Tensor& weight_shard, int64_t vocab_start,
                                    const CommunicatorPtr& tp, bool sequence_parallel);

// Per-row cross-entropy of logits split over the vocabulary: logits_shard [N, V/tp] (this rank's
// columns [vocab_start, vocab_start + V/tp)), target [N] int64 global ids -> loss [N] in at
// least fp32, replicated over tp. The max and the sum of exponentials are all-reduced over tp and
// the target logit comes from the rank owning it (two all-reduces in forward: the max, then the
// sum of exponentials and the target logit together; none in backward).
// Gradient: (softmax - onehot(target)) * dloss, computed on the shard only.
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits_shard, const at::Tensor& target, int64_t vocab_start,
                                        const CommunicatorPtr& tp);

}  // namespace tandem::parallel
