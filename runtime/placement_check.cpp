// Rank-placement check (see placement_check.h).
#include "runtime/placement_check.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "runtime/device.h"
#include "runtime/log.h"
#include "runtime/process_context.h"

namespace tandem::runtime {

PlacementReport check_rank_placement(const PlacementInputs& in) {
  PlacementReport report;
  const bool use_gpu = in.device == DeviceKind::kCuda || (in.device == DeviceKind::kAuto && in.gpus_visible > 0);
  report.info.push_back(
      fmt::format("host {}: {} rank(s), {} GPU(s) visible (CUDA_VISIBLE_DEVICES={}), {} CPU thread(s), "
                  "run.device {} -> {}",
                  in.host, in.ranks_on_node, in.gpus_visible, in.cuda_visible_devices, in.cpu_cores,
                  config::enum_name(in.device), use_gpu ? "one GPU per rank" : "CPU"));
  if (use_gpu) {
    if (in.gpus_visible == 0) {
      report.warnings.push_back(fmt::format(
          "host {}: run.device is cuda but no GPU is visible (CUDA_VISIBLE_DEVICES={}); check the allocation "
          "(--gpus-per-node / --gres=gpu:N) or set run.device: cpu",
          in.host, in.cuda_visible_devices));
    } else if (in.ranks_on_node > in.gpus_visible) {
      report.warnings.push_back(fmt::format(
          "host {}: {} ranks but only {} GPU(s): ranks share GPUs (local rank % {}), which halves each rank's memory "
          "and keeps every group with two ranks on one GPU on host-staged MPI (NCCL refuses such groups); start "
          "one rank per GPU (srun --ntasks-per-node={} or mpirun --map-by "
          "ppr:{}:node)",
          in.host, in.ranks_on_node, in.gpus_visible, in.gpus_visible, in.gpus_visible, in.gpus_visible));
    } else if (in.ranks_on_node < in.gpus_visible) {
      report.warnings.push_back(fmt::format(
          "host {}: {} rank(s) for {} GPUs: {} GPU(s) stay idle; start {} ranks per node (srun --ntasks-per-node={} "
          "or mpirun --map-by ppr:{}:node), or restrict CUDA_VISIBLE_DEVICES",
          in.host, in.ranks_on_node, in.gpus_visible, in.gpus_visible - in.ranks_on_node, in.gpus_visible,
          in.gpus_visible, in.gpus_visible));
    }
  } else {
    const int busy = in.ranks_on_node * in.threads_per_rank;
    if (busy > in.cpu_cores && in.threads_per_rank > 1) {
      report.warnings.push_back(fmt::format(
          "host {}: {} rank(s) x {} thread(s) = {} busy threads on {} CPU thread(s): the ranks will slow each other "
          "down; set OMP_NUM_THREADS={} or start fewer ranks per node",
          in.host, in.ranks_on_node, in.threads_per_rank, busy, in.cpu_cores,
          std::max(1, in.cpu_cores / std::max(1, in.ranks_on_node))));
    } else if (busy > in.cpu_cores) {
      // One thread per rank already: fewer threads cannot help, only fewer ranks. Common and
      // harmless on a small machine (a pipeline's idle ranks leave their core to the busy ones).
      report.info.push_back(fmt::format(
          "host {}: {} ranks of one thread each share {} CPU thread(s), so they take turns; start at most {} ranks "
          "per node for speed",
          in.host, in.ranks_on_node, in.cpu_cores, in.cpu_cores));
    }
  }
  return report;
}

PlacementReport log_rank_placement(const ProcessContext& process, DeviceKind device, int threads_per_rank) {
  PlacementInputs in;
  in.host = process.host;
  in.ranks_on_node = process.local_size;
  in.gpus_visible = device == DeviceKind::kCpu ? 0 : cuda_device_count();
  in.device = device;
  in.cpu_cores = std::max(1u, std::thread::hardware_concurrency());
  in.threads_per_rank = threads_per_rank;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  in.cuda_visible_devices = visible != nullptr ? visible : "(unset)";
  PlacementReport report = check_rank_placement(in);
  if (process.is_root()) {
    for (const std::string& line : report.info) TANDEM_LOG_INFO("launch", "{}", line);
  }
  if (process.local_rank == 0) {
    for (const std::string& line : report.warnings) TANDEM_LOG_WARN("launch", "{}", line);
  }
  return report;
}

}  // namespace tandem::runtime
