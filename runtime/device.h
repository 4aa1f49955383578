// Which accelerator this process uses. Built with or without CUDA: without it (or with no GPU
// present) cuda_device_count() is 0 and everything runs on the CPU. Selecting the device from
// the node-local rank (one rank per GPU) is the job launcher's contract.
#pragma once

#include <string>

#include "runtime/config_schema.h"

namespace tandem::runtime {

// run.device: where a job trains. kAuto means this rank's GPU when one is usable, else the CPU.
enum class DeviceKind { kAuto, kCpu, kCuda };
inline constexpr config::EnumNames<DeviceKind, 3> kDeviceKindNames{
    {{DeviceKind::kAuto, "auto"}, {DeviceKind::kCpu, "cpu"}, {DeviceKind::kCuda, "cuda"}}};
constexpr const auto& config_enum_names(DeviceKind) { return kDeviceKindNames; }

// Intra-op threads for one of `ranks_on_node` ranks: OMP_NUM_THREADS when the launcher set it
// (docs/launching.md), else the node's hardware threads shared evenly (at least 1), since more
// only oversubscribes the cores. The one rule the trainer and the placement check use.
int threads_per_rank(int ranks_on_node);

// True when this binary was built with the CUDA toolkit (kernels and the NCCL backend present).
bool built_with_cuda();

// Number of CUDA devices visible to this process (0 without CUDA, a driver or a GPU). Never throws.
int cuda_device_count();

// Why no GPU is usable, for skip messages and logs ("built without CUDA", "no CUDA device: ...");
// empty when a device is usable.
std::string gpu_unavailable_reason();

// Makes `local_rank % cuda_device_count()` this thread's current device and returns it.
// Throws tandem::Error(kCuda) when no device is usable.
int select_device_for_local_rank(int local_rank);

}  // namespace tandem::runtime
