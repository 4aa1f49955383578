// Post-training objectives: SFT, rejection-sampling fine-tuning (RFT), DPO and GRPO as one
// gradient with a per-token coefficient (DeepSeekMath, section 5.2.1; docs/post-training.md):
//   grad J = E_(q,o) [ 1/|o| sum_t GC(q, o, t) grad log pi_theta(o_t | q, o_<t) ].
// Each objective turns the main head's logits into per-token log-probabilities of the targets
// and returns a loss whose gradient is exactly that sum, averaged over the micro-batch's
// responses. They differ only in GC:
//   SFT  GC = 1 (response tokens);  RFT  GC = 1 for a correct response, 0 otherwise;
//   DPO  GC = +beta * sigmoid(-beta * margin) on the chosen response, -beta * sigmoid(-beta *
//        margin) on the rejected one, margin = sum_t (log pi - log pi_ref)(chosen) - (same)(rejected)
//        (sequence sums: DPO's gradient has no 1/|o|, so its loss is not length-normalized);
//   GRPO GC = rho * A * [unclipped term active] + beta * (pi_ref / pi - 1), rho = pi / pi_old,
//        from J = min(rho A, clip(rho, 1 - eps, 1 + eps) A) - beta * (pi_ref/pi - log(pi_ref/pi) - 1).
// Only the main head's targets enter (MTP depths are not post-trained; their modules keep their
// pretrained weights and get no gradient). Under tensor parallelism the log-probabilities come
// from the vocabulary-parallel cross-entropy, so the objectives are replicated over tp like the
// pretraining loss.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string_view>

#include "model/objective.h"

namespace tandem::model {

// The per-token data of a micro-batch of responses, aligned with the main head's targets
// (tokens[:, 1:] of the [B, T+1] input), all on the logits' device.
struct ResponseTokens {
  at::Tensor response;        // [B, T] int64: which response (0..R-1) each target belongs to; -1 for prompt and padding
  int64_t num_responses = 0;  // R
  at::Tensor coefficients;    // RFT: [R] 1 for a kept (correct) response, 0 otherwise; undefined = all 1
  at::Tensor advantages;      // GRPO: [R] A_i = (r_i - mean(r)) / (std(r) + eps) over the response's group
  at::Tensor old_logprobs;    // GRPO: [B, T] log pi_old(target), the policy that sampled the responses
  at::Tensor ref_logprobs;    // GRPO (KL) and DPO: [B, T] log pi_ref(target), the frozen reference
};

// log pi(target) of the main head's B*T rows as [B, T] (differentiable, at least fp32) and the
// policy's entropy at each of them (detached); collective over head.tp.
struct TokenLogprobs {
  at::Tensor logprobs;
  at::Tensor entropy;
};
TokenLogprobs main_head_logprobs(const HeadOutput& head, int64_t batch, int64_t length);

// SFT and RFT: loss = -(1/R) sum_i c_i / |o_i| sum_t log pi(o_i,t), c_i = coefficients (1 for SFT).
class SftObjective final : public Objective {
 public:
  std::string_view name() const override { return "sft"; }
  LossPieces losses(const ModelConfig& config, const HeadOutput& head) const override;
};

// DPO with a frozen reference: loss = -(1/P) sum_pairs log sigmoid(beta * margin). Responses come
// in pairs: 2k is the chosen and 2k+1 the rejected response of pair k (R = 2P).
class DpoObjective final : public Objective {
 public:
  explicit DpoObjective(double beta) : beta_(beta) {}
  std::string_view name() const override { return "dpo"; }
  LossPieces losses(const ModelConfig& config, const HeadOutput& head) const override;

 private:
  double beta_;
};

// GRPO: loss = -(1/R) sum_i 1/|o_i| sum_t [min(rho A_i, clip(rho) A_i) - beta * KL_t].
class GrpoObjective final : public Objective {
 public:
  GrpoObjective(double clip_eps, double kl_beta) : clip_eps_(clip_eps), kl_beta_(kl_beta) {}
  std::string_view name() const override { return "grpo"; }
  LossPieces losses(const ModelConfig& config, const HeadOutput& head) const override;

 private:
  double clip_eps_;
  double kl_beta_;
};

}  // namespace tandem::model
