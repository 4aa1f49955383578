// Kineto recording of one step (kernel_trace.h).
#include "launch/train/kernel_trace.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <exception>
#include <set>

#include "runtime/file_util.h"
#include "runtime/log.h"

namespace tandem::launch {
namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;

torch::profiler::impl::ProfilerConfig kineto_config() {
  return torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::KINETO);
}

std::set<ActivityType> activities(bool cuda) {
  std::set<ActivityType> out{ActivityType::CPU};
  if (cuda) out.insert(ActivityType::CUDA);
  return out;
}

}  // namespace

KernelTrace::KernelTrace(int cuda_device) : cuda_device_(cuda_device) {
  try {
    profiler::prepareProfiler(kineto_config(), activities(cuda_device_ >= 0));
    profiler::enableProfiler(kineto_config(), activities(cuda_device_ >= 0));
    running_ = true;
  } catch (const std::exception& e) {
    TANDEM_LOG_WARN("trace", "logging.trace_kernels: the Kineto profiler did not start ({}); step not traced",
                    e.what());
  }
}

KernelTrace::~KernelTrace() {
  if (!running_) return;
  try {
    profiler::disableProfiler();
  } catch (const std::exception&) {  // a destructor during unwinding: nothing to report to
  }
}

void KernelTrace::save(const std::string& path) {
  if (!running_) return;
  running_ = false;
  try {
    // Every stream's kernels (compute, communication) must have ended to be in the record.
    if (cuda_device_ >= 0) at::detail::getCUDAHooks().deviceSynchronize(static_cast<c10::DeviceIndex>(cuda_device_));
    const std::unique_ptr<profiler::ProfilerResult> result = profiler::disableProfiler();
    runtime::make_directories(path.substr(0, path.find_last_of('/')));
    result->save(path);
  } catch (const std::exception& e) {
    TANDEM_LOG_WARN("trace", "logging.trace_kernels: writing {} failed: {}", path, e.what());
  }
}

}  // namespace tandem::launch
