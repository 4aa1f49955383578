// StepLogger: what each optimizer step reports, written by rank 0 only: the step line of the log
// (at logging.log_interval, and on the first and last steps: progress, losses, lr, gradient
// norm, throughput, MFU, expert imbalance, ETA, eval loss), one metrics.jsonl line per step
// (runtime/metrics_writer.h: the keys of DESIGN.md section 9 and more) and TensorBoard scalars
// (logging.tensorboard). On other ranks every call is a no-op. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "launch/config/job_config.h"
#include "launch/train/step_runner.h"

namespace tandem::runtime {
class MetricsWriter;
class TensorBoardWriter;
struct ProcessContext;
}  // namespace tandem::runtime

namespace tandem::launch {

// What one optimizer step produced, averaged over data-parallel ranks.
struct StepRecord {
  int64_t step = 0;  // 1-based
  double lr = 0;
  StepLosses losses;
  double grad_norm = 0;
  double expert_imbalance = 1.0;  // mean over MoE layers of max / mean tokens per expert
  std::optional<double> eval_loss;
};

class StepLogger {
 public:
  // `resumed_step`: the checkpoint step a resumed run continues from (metrics.jsonl lines after
  // it are dropped; nullopt, a fresh start: every line is); `peak_flops`: of the whole job, for
  // MFU. Creates run.output_dir on rank 0. TensorBoard gets every series metrics.jsonl has.
  StepLogger(const JobConfig& config, const runtime::ProcessContext& process, std::optional<int64_t> resumed_step,
             double peak_flops);
  ~StepLogger();
  StepLogger(const StepLogger&) = delete;
  StepLogger& operator=(const StepLogger&) = delete;

  // Reports `record`; `step_seconds` is its wall time (evaluation included).
  void log(const StepRecord& record, double step_seconds);
  void flush();

 private:
  const JobConfig& config_;
  double peak_flops_;
  double flops_per_token_;
  int64_t tokens_per_step_;
  int64_t first_step_;  // the last step done before this run (0, or the resumed step)
  std::chrono::steady_clock::time_point run_start_;
  std::unique_ptr<runtime::MetricsWriter> metrics_;          // rank 0
  std::unique_ptr<runtime::TensorBoardWriter> tensorboard_;  // rank 0, when enabled
};

}  // namespace tandem::launch
