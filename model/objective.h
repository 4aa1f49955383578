// Objective: what the last stage's head turns into the loss of a micro-batch. The model computes
// the logits of the main head and of every MTP depth; the objective decides the loss that
// backward differentiates and the pieces that are logged. Pretraining is next-token prediction
// (NextTokenObjective, docs/model.md#training-loss); post-training methods plug in other ones.
// An objective runs inside the forward of the last stage, so autograd records it; under tensor
// parallelism it runs on every tp rank of the stage and must issue the same collectives there.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/model_config.h"
#include "parallel/communicator.h"

namespace tandem::model {

// Loss values of one micro-batch (scalars). `loss` is what to differentiate; aux_loss's gradient
// reaches the router through the hidden states (model/stage.h), so it enters `loss` detached.
struct LossPieces {
  at::Tensor loss;      // [] the objective
  at::Tensor lm_loss;   // [] next-token cross-entropy, mean over B*T positions (post-training: the method's loss)
  at::Tensor mtp_loss;  // [] (lambda / D) * sum_k L_k; 0 when D = 0
  at::Tensor aux_loss;  // [] sequence-wise balance loss of the MoE layers that ran (detached)
  // Further detached scalars to log (post-training: KL, clip fraction, entropy, ...), by name.
  std::vector<std::pair<std::string, at::Tensor>> metrics;
};

struct ResponseTokens;  // model/policy_objectives.h

// The head's output for one micro-batch [B, T+1] with MTP depth D.
struct HeadOutput {
  // [rows, V/tp]: the main head's B*T rows, then each depth k's B*(T-k) rows, in that order.
  at::Tensor logits;
  // targets[0] [B*T] next tokens of the main head, targets[k] [B*(T-k)] tokens k+1 ahead.
  std::vector<at::Tensor> targets;
  at::Tensor aux_loss;           // [] balance loss of the stage's MoE layers (detached); may be undefined
  int64_t vocab_start = 0;       // this tp rank's first vocabulary column
  parallel::CommunicatorPtr tp;  // the vocabulary's tensor-parallel group (null: all of it here)
  // Post-training: the micro-batch's responses (StageInput::responses); null in pretraining.
  std::shared_ptr<const ResponseTokens> responses;
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string_view name() const = 0;
  // The loss pieces of one micro-batch, on the logits' device, in at least fp32.
  virtual LossPieces losses(const ModelConfig& config, const HeadOutput& head) const = 0;
};

// Pretraining: lm_loss = mean cross-entropy of the main head, mtp_loss = mtp_loss_weight / D *
// sum over depths of their mean cross-entropy, loss = lm_loss + mtp_loss + aux_loss.
class NextTokenObjective final : public Objective {
 public:
  std::string_view name() const override { return "next_token"; }
  LossPieces losses(const ModelConfig& config, const HeadOutput& head) const override;
};

// The objective stages use unless told otherwise (a shared NextTokenObjective).
std::shared_ptr<const Objective> default_objective();

}  // namespace tandem::model
