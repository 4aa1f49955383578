// Per-rank memory estimate of a training job (check-config, plan): weights, gradients,
// optimizer state under the ZeRO stage, and activations of the micro-batches a schedule keeps
// alive. An estimate with its formula documented, not a measurement: allocator slack,
// communication buffers and fragmentation come on top.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launch/config/job_config.h"

namespace tandem::launch {

struct RankMemory {
  int64_t pp_rank = 0;
  int64_t params = 0;       // parameters held by this rank (after TP/EP splits)
  double weight_bytes = 0;  // compute copy of the weights (bf16 on GPU, fp32 on CPU)
  double grad_bytes = 0;
  double optimizer_bytes = 0;     // fp32 master (mixed precision only) + Adam m and v
  double activation_bytes = 0;    // live micro-batches x per-micro-batch activations
  int64_t live_microbatches = 0;  // peak live activation chunks from the schedule
  double total_bytes() const { return weight_bytes + grad_bytes + optimizer_bytes + activation_bytes; }
};

// One entry per pipeline rank (ranks with the same pp coordinate hold the same amount).
// `precision` (resolved: resolve_precision) selects mixed precision (2-byte weights + fp32
// master) or plain fp32. `zero_stage` overrides parallel.zero (-1: the job's), so a report can
// compare the stages.
std::vector<RankMemory> estimate_memory(const JobConfig& config, Precision precision, int64_t zero_stage = -1);

// The precision an estimate assumes: resolve_precision on the device the job is meant for, where
// run.device auto counts as a GPU (check-config and plan usually run away from the GPU nodes).
Precision estimated_precision(const JobConfig& config);

std::string format_bytes(double bytes);

}  // namespace tandem::launch
