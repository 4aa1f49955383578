// One training step recorded with LibTorch's Kineto profiler (logging.trace_kernels): host ops
// and, on a GPU, every device kernel with its stream, saved as a Chrome trace. Why: on a GPU the
// exchange timeline (parallel/exchange_recorder.h) sees only the host, where an NCCL wait returns
// at once (the compute stream waits, not the host); whether an all-to-all's NCCL kernels ran
// while compute kernels ran is visible only in the device's own timeline
// (tests/bench/trace_overlap.py --cat kernel reads these files).
#pragma once

#include <memory>
#include <string>

namespace tandem::launch {

class KernelTrace {
 public:
  // Starts recording on this thread, plus the device kernels of the whole process when
  // `cuda_device` >= 0 (this rank's GPU; -1 on the CPU). Never throws: a profiler that cannot
  // start is logged and the step runs untraced.
  explicit KernelTrace(int cuda_device);
  ~KernelTrace();
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;

  // Waits for the device, stops recording and writes the trace to `path` (directories created).
  // Logs instead of throwing when the profiler fails.
  void save(const std::string& path);

 private:
  int cuda_device_ = -1;
  bool running_ = false;
};

}  // namespace tandem::launch
