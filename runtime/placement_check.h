// Start-of-job check that ranks and accelerators match on each node: one rank per GPU is the
// launcher's contract (device.h selects GPU local_rank % count). Too many ranks per node makes
// ranks share a GPU (less memory each, and NCCL refuses a group with two ranks on one device, so
// such groups stay on host-staged MPI); too few leaves GPUs idle; on CPU runs, more busy threads
// than cores slows every rank. The check is a pure function of what it is given, so tests can
// feed it any node; log_rank_placement() gathers the real values and logs the result.
#pragma once

#include <string>
#include <vector>

#include "runtime/device.h"

namespace tandem::runtime {

struct ProcessContext;

struct PlacementInputs {
  std::string host;
  int ranks_on_node = 1;                  // ProcessContext::local_size
  int gpus_visible = 0;                   // cuda_device_count()
  DeviceKind device = DeviceKind::kAuto;  // run.device
  int cpu_cores = 1;                      // hardware threads of the node
  int threads_per_rank = 1;               // intra-op threads each rank uses (OMP_NUM_THREADS or torch's)
  std::string cuda_visible_devices;       // the variable's value; "(unset)" when it is not set
};

struct PlacementReport {
  std::vector<std::string> info;      // lines describing the node (and harmless crowding)
  std::vector<std::string> warnings;  // each mismatch, what it causes and how to fix it
  bool ok() const { return warnings.empty(); }
};

PlacementReport check_rank_placement(const PlacementInputs& inputs);

// Fills PlacementInputs for this process (device count, cores, CUDA_VISIBLE_DEVICES) with the
// intra-op threads each rank uses, and logs the report: rank 0 logs the info line, the first rank
// of every node logs its node's warnings (so a mismatch on any node is seen). Returns this node's
// report. Never throws; no collectives.
PlacementReport log_rank_placement(const ProcessContext& process, DeviceKind device, int threads_per_rank);

}  // namespace tandem::runtime
