// StepTracing: what the trainer records of the steps named by logging.trace_steps, besides the
// pipeline's op timelines (pipeline_runner.h): every expert all-to-all of an ep > 1 job
// (traces/stepN/exchanges/rankR.json, through a recording ep communicator) and, with
// logging.trace_kernels, the step as a Kineto Chrome trace (traces/stepN/kernels/rankR.json).
// Not thread-safe; one per rank.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "launch/config/job_config.h"
#include "launch/train/kernel_trace.h"
#include "model/parallel_groups.h"

namespace tandem::parallel {
class ExchangeRecorder;
}

namespace tandem::launch {

// Whether logging.trace_steps names `step`.
bool is_traced_step(const JobConfig& config, int64_t step);
// Notes (info, on the calling rank) logging.trace_steps that will not be traced: a job with no
// pipeline and no expert parallelism, or steps after train.steps. Not warnings: a short trial
// run of a job that traces a later step is normal.
void note_untraced_steps(const JobConfig& config);

class StepTracing {
 public:
  // `rank`: this process's global rank (file names); `cuda_device`: its GPU, or -1 on the CPU.
  StepTracing(const JobConfig& config, int rank, int cuda_device);
  ~StepTracing();
  StepTracing(const StepTracing&) = delete;
  StepTracing& operator=(const StepTracing&) = delete;

  // Wraps `groups.ep` in a recording communicator when this job traces steps with ep > 1. Call
  // before the model is built over `groups`.
  void instrument(model::ParallelGroups& groups);
  // Around one step's forward, backward and gradient synchronisation: begin_step starts recording
  // if `step` is traced; end_step stops and writes this rank's files.
  void begin_step(int64_t step);
  void end_step(int64_t step);

 private:
  const JobConfig& config_;
  int rank_;
  int cuda_device_;
  std::shared_ptr<parallel::ExchangeRecorder> exchanges_;  // null: no all-to-all to record
  std::optional<KernelTrace> kernels_;
};

}  // namespace tandem::launch
