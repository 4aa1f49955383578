// The trainer's pipeline path (see launch/train/detail/trainer_state.h): the steps, evaluation and
// routing-bias bookkeeping of a pipeline-parallel job go through PipelineRunner (the schedule
// executor over this rank's stages); everything around them (data, gradient synchronisation over
// dp/tp/ep, norm, clipping, AdamW, checkpoints, metrics, stop signals) is the trainer's own path,
// shared with pp = 1.
#include <ATen/ATen.h>

#include <algorithm>

#include "launch/train/detail/trainer_state.h"
#include "runtime/file_util.h"
#include "runtime/log.h"

namespace tandem::launch {
namespace {

// This dp rank's next `count` micro-batches of `sampler`, on the run device.
std::vector<at::Tensor> next_micro_batches(Trainer::State& s, runtime::GptSampler& sampler, int64_t count) {
  std::vector<at::Tensor> out;
  for (int64_t k = 0; k < count; ++k) out.push_back(next_micro_batch(s, sampler));
  return out;
}

}  // namespace

at::Tensor next_micro_batch(const Trainer::State& s, runtime::GptSampler& sampler) {
  const runtime::SampleBatch batch = sampler.next_batch(s.config.data.micro_batch_size);
  return at::from_blob(const_cast<int64_t*>(batch.tokens.data()), {batch.batch_size, batch.sample_length}, at::kLong)
      .clone()
      .to(s.device);  // [B, T+1]
}

void check_pipeline_supported(const JobConfig& config) {
  if (!uses_pipeline(config)) return;
  const auto& p = config.parallel;
  TANDEM_CHECK_CONFIG(p.zero <= 1,
                      "parallel.zero = {} with a pipeline (pp = {}, {}): the pipeline path of `tandem train` keeps "
                      "each stage's gradients whole until the step's last backward and shards optimizer state only "
                      "(zero 1); use --set parallel.zero=1 or 0",
                      p.zero, p.pp, p.pipeline.schedule);
}

void warn_untraced_steps(const JobConfig& config) {
  const std::vector<int64_t>& steps = config.logging.trace_steps;
  if (steps.empty()) return;
  if (!uses_pipeline(config) && config.parallel.ep <= 1) {
    TANDEM_LOG_WARN("train", "logging.trace_steps: this job runs no pipeline (pp = 1, schedule {}) and no expert "
                    "parallelism, so there is no op timeline or all-to-all to trace", config.parallel.pipeline.schedule);
    return;
  }
  std::vector<int64_t> late;
  for (int64_t step : steps) {
    if (step > config.train.steps) late.push_back(step);
  }
  if (!late.empty()) {
    TANDEM_LOG_WARN("train", "logging.trace_steps: step(s) {} come after the last step ({}) and will not be traced",
                    fmt::join(late, ", "), config.train.steps);
  }
}

bool is_traced_step(const JobConfig& config, int64_t step) {
  const std::vector<int64_t>& steps = config.logging.trace_steps;
  return std::find(steps.begin(), steps.end(), step) != steps.end();
}

void write_exchange_trace(Trainer::State& s, int64_t step) {
  s.exchanges->set_enabled(false);
  const std::vector<parallel::ExchangeSpan> spans = s.exchanges->take();
  const std::string dir = fmt::format("{}/traces/step{}/exchanges", s.config.run.output_dir, step);
  runtime::make_directories(dir);
  runtime::write_file_atomic(fmt::format("{}/rank{}.json", dir, s.process.rank),
                             parallel::exchange_trace_json(spans, s.process.rank, step));
}

at::Tensor pipeline_forward_backward(Trainer::State& s, int64_t step) {
  const std::vector<at::Tensor> micro_batches = next_micro_batches(s, *s.train_sampler, s.micro_batches);
  const PipelineRunner::Losses l = s.pipeline->train_step(micro_batches, step);
  return at::tensor({l.loss, l.lm_loss, l.mtp_loss, l.aux_loss}, at::kDouble);
}

double pipeline_evaluate(Trainer::State& s, int64_t count) {
  s.pipeline->train(false);
  const double loss = s.pipeline->evaluate(next_micro_batches(s, *s.valid_sampler, count));
  s.pipeline->train(true);
  return loss;
}

at::Tensor local_expert_load(const Trainer::State& s) {
  return s.pipeline ? s.pipeline->expert_load() : s.model->expert_load();
}

void update_routing_bias(Trainer::State& s, const at::Tensor& counts) {
  if (s.pipeline) {
    if (s.config.model.n_routed_experts > 0) s.pipeline->update_routing_bias(counts);
    s.pipeline->reset_expert_load();
  } else {
    if (s.config.model.n_routed_experts > 0) s.model->update_routing_bias(counts);
    s.model->reset_expert_load();
  }
}

std::vector<std::pair<std::string, at::Tensor>> model_buffers(const Trainer::State& s, bool stored_only) {
  if (s.pipeline) return s.pipeline->named_buffers(stored_only);
  // pp = 1: buffers are identical on every rank; rank 0 stores them.
  if (stored_only && !s.process.is_root()) return {};
  return s.model->named_buffers();
}

}  // namespace tandem::launch
