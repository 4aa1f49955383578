// resolve_training_device (see training_device.h).
#include "launch/train/training_device.h"

#include <ATen/Context.h>

#include "runtime/device.h"
#include "runtime/error.h"

namespace tandem::launch {

TrainingDevice resolve_training_device(const JobConfig& config, int local_rank, const std::string& host) {
  const bool gpu_usable = runtime::gpu_unavailable_reason().empty() && at::hasCUDA();
  TANDEM_CHECK_CONFIG(config.run.device != runtime::DeviceKind::kCuda || gpu_usable,
                      "run.device: cuda, but no GPU is usable on {} ({}); use run.device=cpu or auto", host,
                      at::hasCUDA() ? runtime::gpu_unavailable_reason() : "this LibTorch was built without CUDA");
  const runtime::DeviceKind kind = resolve_device(config.run.device, gpu_usable);
  TrainingDevice out;
  if (kind == runtime::DeviceKind::kCuda) {
    out.device =
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(runtime::select_device_for_local_rank(local_rank)));
  }
  out.precision = resolve_precision(config.train.precision, kind);
  return out;
}

}  // namespace tandem::launch
