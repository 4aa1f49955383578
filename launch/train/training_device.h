// Where one rank trains and in which precision: run.device and train.precision resolved on this
// machine by the one rule of launch/config/job_config.h (resolve_device, resolve_precision).
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "launch/config/job_config.h"

namespace tandem::launch {

struct TrainingDevice {
  at::Device device{at::kCPU};             // the CPU, or the GPU of this rank's node-local index
  Precision precision = Precision::kFp32;  // resolved: kFp32 or kBf16
  // bf16 autocast around forwards; parameters, gradients and optimizer state stay fp32.
  bool bf16() const { return precision == Precision::kBf16; }
};

// Resolves run.device for the rank with node-local index `local_rank` on `host` (which makes its
// GPU current) and train.precision for that device. Throws tandem::Error (kConfig) when
// run.device is cuda and no GPU is usable.
TrainingDevice resolve_training_device(const JobConfig& config, int local_rank, const std::string& host);

}  // namespace tandem::launch
