// Objectives (see objective.h).
#include "model/objective.h"

#include <ATen/ATen.h>

#include "parallel/vocab_parallel.h"

namespace tandem::model {

LossPieces NextTokenObjective::losses(const ModelConfig& config, const HeadOutput& head) const {
  const at::ScalarType loss_dtype = at::promote_types(head.logits.scalar_type(), at::kFloat);
  const int64_t tp = head.tp ? head.tp->size() : 1;
  std::vector<at::Tensor> per_depth;  // mean cross-entropy of the main head, then of each MTP depth
  int64_t row = 0;
  for (const at::Tensor& target : head.targets) {
    const int64_t n = target.numel();
    const at::Tensor rows = head.logits.narrow(0, row, n);  // [n, V/tp]
    per_depth.push_back(tp > 1 ? parallel::vocab_parallel_cross_entropy(rows, target, head.vocab_start, head.tp).mean()
                               : at::cross_entropy_loss(rows.to(loss_dtype), target));
    row += n;
  }
  const auto depth = static_cast<int64_t>(per_depth.size()) - 1;
  LossPieces p;
  p.lm_loss = per_depth[0];
  p.mtp_loss = at::zeros({}, per_depth[0].options());
  for (int64_t k = 1; k <= depth; ++k) p.mtp_loss = p.mtp_loss + per_depth[static_cast<size_t>(k)];
  if (depth > 0) p.mtp_loss = p.mtp_loss * (config.mtp_loss_weight / static_cast<double>(depth));
  p.aux_loss = head.aux_loss.defined() ? head.aux_loss.to(loss_dtype) : at::zeros({}, per_depth[0].options());
  p.loss = p.lm_loss + p.mtp_loss + p.aux_loss;
  return p;
}

std::shared_ptr<const Objective> default_objective() { return std::make_shared<const NextTokenObjective>(); }

}  // namespace tandem::model
