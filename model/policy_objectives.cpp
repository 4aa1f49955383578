// Post-training objectives (see policy_objectives.h). Every quantity is per target token [B, T]
// or per response [R]; tokens outside any response (prompt, padding) carry weight 0.
#include "model/policy_objectives.h"

#include <ATen/ATen.h>

#include "parallel/vocab_parallel.h"
#include "runtime/error.h"

namespace tandem::model {
namespace {

const ResponseTokens& responses_of(const HeadOutput& head, std::string_view method) {
  TANDEM_CHECK_INPUT(head.responses && head.responses->response.defined(),
                     "the {} objective scores responses, but the micro-batch has none (StageInput::responses)", method);
  const ResponseTokens& r = *head.responses;
  TANDEM_CHECK_INPUT(r.response.numel() == head.targets[0].numel() && r.num_responses > 0,
                     "{}: responses [{}] do not match the {} main-head targets", method, r.response.numel(),
                     head.targets[0].numel());
  return r;
}

// Sum over each response's tokens: values [B, T] -> [R] (differentiable).
at::Tensor per_response_sum(const at::Tensor& values, const ResponseTokens& r) {
  const at::Tensor index = r.response.reshape({-1});
  const at::Tensor valid = index >= 0;
  const at::Tensor zeros = at::zeros({r.num_responses}, values.options());
  return zeros.index_add(0, index.masked_select(valid), values.reshape({-1}).masked_select(valid));
}

// The per-response value of each token [R] -> [B, T], 0 outside responses.
at::Tensor per_token(const at::Tensor& per_response, const ResponseTokens& r) {
  const at::Tensor index = r.response.clamp_min(0);
  return at::where(r.response >= 0, per_response.index_select(0, index.reshape({-1})).view(index.sizes()),
                   at::zeros({}, per_response.options()));
}

// 1 / (|o_i| R) on each response token: averaging per response, then over the responses.
at::Tensor length_weights(const ResponseTokens& r, const at::TensorOptions& options) {
  const at::Tensor ones = (r.response >= 0).to(options.dtype());
  const at::Tensor lengths = per_response_sum(ones, r).clamp_min(1);
  return per_token(1.0 / (lengths * static_cast<double>(r.num_responses)), r);
}

// Mean over response tokens of a detached [B, T] value.
at::Tensor token_mean(const at::Tensor& values, const ResponseTokens& r) {
  const at::Tensor mask = (r.response >= 0).to(values.scalar_type());
  return ((values.detach() * mask).sum() / mask.sum().clamp_min(1));
}

LossPieces finish(const HeadOutput& head, at::Tensor loss, const TokenLogprobs& lp, const ResponseTokens& r) {
  LossPieces p;
  p.lm_loss = loss;
  p.mtp_loss = at::zeros({}, loss.options());
  p.aux_loss = head.aux_loss.defined() ? head.aux_loss.to(loss.scalar_type()) : at::zeros({}, loss.options());
  p.loss = p.lm_loss + p.aux_loss;
  p.metrics.emplace_back("entropy", token_mean(lp.entropy, r));
  const at::Tensor lengths = per_response_sum((r.response >= 0).to(loss.scalar_type()), r);
  p.metrics.emplace_back("response_length", lengths.mean());
  return p;
}

}  // namespace

TokenLogprobs main_head_logprobs(const HeadOutput& head, int64_t batch, int64_t length) {
  const at::Tensor& target = head.targets[0];
  const at::Tensor rows = head.logits.narrow(0, 0, target.numel());  // [B*T, V/tp]
  const at::ScalarType dtype = at::promote_types(rows.scalar_type(), at::kFloat);
  const bool split = head.tp && head.tp->size() > 1;
  TokenLogprobs out;
  out.logprobs = split ? -parallel::vocab_parallel_cross_entropy(rows, target, head.vocab_start, head.tp)
                       : at::log_softmax(rows.to(dtype), -1).gather(1, target.unsqueeze(1)).squeeze(1);
  out.logprobs = out.logprobs.view({batch, length});
  // H = log Z - sum p z, from the shard's max, sum of exponentials and their z-weighted sum.
  const at::Tensor z = rows.detach().to(dtype);
  at::Tensor max = std::get<0>(z.max(-1, true));  // [N, 1]
  if (split) head.tp->all_reduce(max, parallel::ReduceOp::kMax);
  const at::Tensor e = at::exp(z - max);
  at::Tensor sums = at::stack({e.sum(-1), (e * z).sum(-1)});  // [2, N]
  if (split) head.tp->all_reduce(sums, parallel::ReduceOp::kSum);
  out.entropy = (at::log(sums[0]) + max.squeeze(1) - sums[1] / sums[0]).view({batch, length});
  return out;
}

LossPieces SftObjective::losses(const ModelConfig&, const HeadOutput& head) const {
  const ResponseTokens& r = responses_of(head, name());
  const TokenLogprobs lp = main_head_logprobs(head, r.response.size(0), r.response.size(1));
  at::Tensor weights = length_weights(r, lp.logprobs.options());
  if (r.coefficients.defined()) weights = weights * per_token(r.coefficients.to(weights.scalar_type()), r);
  return finish(head, -(weights * lp.logprobs).sum(), lp, r);
}

LossPieces DpoObjective::losses(const ModelConfig&, const HeadOutput& head) const {
  const ResponseTokens& r = responses_of(head, name());
  TANDEM_CHECK_INPUT(r.num_responses % 2 == 0 && r.ref_logprobs.defined(),
                     "dpo needs chosen/rejected pairs (an even number of responses) and reference log-probabilities");
  const TokenLogprobs lp = main_head_logprobs(head, r.response.size(0), r.response.size(1));
  const at::Tensor delta = per_response_sum(lp.logprobs - r.ref_logprobs.to(lp.logprobs.scalar_type()), r);  // [R]
  const at::Tensor pairs = delta.view({-1, 2});
  const at::Tensor margin = pairs.select(1, 0) - pairs.select(1, 1);  // [P] chosen - rejected
  LossPieces p = finish(head, -at::log_sigmoid(beta_ * margin).mean(), lp, r);
  p.metrics.emplace_back("dpo_margin", margin.detach().mean());
  p.metrics.emplace_back("dpo_accuracy", (margin.detach() > 0).to(margin.scalar_type()).mean());
  return p;
}

LossPieces GrpoObjective::losses(const ModelConfig&, const HeadOutput& head) const {
  const ResponseTokens& r = responses_of(head, name());
  TANDEM_CHECK_INPUT(r.advantages.defined() && r.old_logprobs.defined(),
                     "grpo needs each response's advantage and the sampling policy's log-probabilities");
  const TokenLogprobs lp = main_head_logprobs(head, r.response.size(0), r.response.size(1));
  const at::Tensor& logp = lp.logprobs;
  const at::Tensor advantage = per_token(r.advantages.to(logp.scalar_type()), r);  // [B, T]
  const at::Tensor ratio = at::exp(logp - r.old_logprobs.to(logp.scalar_type()));  // rho
  const at::Tensor unclipped = ratio * advantage;
  const at::Tensor clipped = ratio.clamp(1.0 - clip_eps_, 1.0 + clip_eps_) * advantage;
  at::Tensor objective = at::minimum(unclipped, clipped);  // [B, T]
  at::Tensor kl = at::zeros_like(logp);
  if (kl_beta_ > 0) {
    TANDEM_CHECK_INPUT(r.ref_logprobs.defined(), "grpo with kl_beta > 0 needs the reference's log-probabilities");
    const at::Tensor log_ratio = r.ref_logprobs.to(logp.scalar_type()) - logp;  // log(pi_ref / pi)
    kl = at::exp(log_ratio) - log_ratio - 1.0;  // unbiased estimate of KL(pi || pi_ref), >= 0
    objective = objective - kl_beta_ * kl;
  }
  const at::Tensor weights = length_weights(r, logp.options());
  LossPieces p = finish(head, -(weights * objective).sum(), lp, r);
  p.metrics.emplace_back("kl", token_mean(kl, r));
  p.metrics.emplace_back("clip_fraction", token_mean((clipped < unclipped).to(logp.scalar_type()), r));
  p.metrics.emplace_back("ratio", token_mean(ratio, r));
  return p;
}

}  // namespace tandem::model
