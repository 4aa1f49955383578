// StepTracing (see step_tracing.h).
#include "launch/train/step_tracing.h"

#include <algorithm>

#include "parallel/exchange_recorder.h"
#include "runtime/file_util.h"
#include "runtime/log.h"

namespace tandem::launch {

bool is_traced_step(const JobConfig& config, int64_t step) {
  const std::vector<int64_t>& steps = config.logging.trace_steps;
  return std::find(steps.begin(), steps.end(), step) != steps.end();
}

void note_untraced_steps(const JobConfig& config) {
  const std::vector<int64_t>& steps = config.logging.trace_steps;
  if (steps.empty()) return;
  if (!uses_pipeline(config) && config.parallel.ep <= 1) {
    TANDEM_LOG_INFO("train",
                    "logging.trace_steps: this job runs no pipeline (pp = 1, schedule {}) and no expert "
                    "parallelism, so there is no op timeline or all-to-all to trace",
                    config::enum_name(config.parallel.pipeline.schedule));
    return;
  }
  std::vector<int64_t> late;
  for (int64_t step : steps) {
    if (step > config.train.steps) late.push_back(step);
  }
  if (!late.empty()) {
    TANDEM_LOG_INFO("train", "logging.trace_steps: step(s) {} come after the last step ({}): not traced this run",
                    fmt::join(late, ", "), config.train.steps);
  }
}

StepTracing::StepTracing(const JobConfig& config, int rank, int cuda_device)
    : config_(config), rank_(rank), cuda_device_(cuda_device) {}

StepTracing::~StepTracing() = default;

void StepTracing::instrument(model::ParallelGroups& groups) {
  if (config_.logging.trace_steps.empty() || groups.ep_size() <= 1) return;
  exchanges_ = std::make_shared<parallel::ExchangeRecorder>();
  groups.ep = parallel::make_recording_communicator(groups.ep, exchanges_);
}

void StepTracing::begin_step(int64_t step) {
  if (!is_traced_step(config_, step)) return;
  if (exchanges_) exchanges_->set_enabled(true);
  if (config_.logging.trace_kernels) kernels_.emplace(cuda_device_);
}

void StepTracing::end_step(int64_t step) {
  if (exchanges_ && is_traced_step(config_, step)) {
    exchanges_->set_enabled(false);
    const std::string dir = fmt::format("{}/traces/step{}/exchanges", config_.run.output_dir, step);
    runtime::make_directories(dir);
    runtime::write_file_atomic(fmt::format("{}/rank{}.json", dir, rank_),
                               parallel::exchange_trace_json(exchanges_->take(), rank_, step));
  }
  if (kernels_) {
    kernels_->save(fmt::format("{}/traces/step{}/kernels/rank{}.json", config_.run.output_dir, step, rank_));
    kernels_.reset();
  }
}

}  // namespace tandem::launch
