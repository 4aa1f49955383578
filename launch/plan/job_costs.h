// From a job to schedule costs: the FLOPs and all-to-all bytes of one micro-batch through the
// model (model_size.h), priced with the job's hardware section. Shared by `tandem simulate` and
// `tandem plan`; the same numbers size MFU.
#pragma once

#include "launch/config/job_config.h"
#include "schedule/cost_model.h"

namespace tandem::launch {

struct JobWork {
  schedule::StageWork layers;       // all decoder layers, one micro-batch, per rank (after TP)
  schedule::StageWork first_extra;  // embedding (negligible compute)
  schedule::StageWork last_extra;   // final norm, output head, MTP modules
  schedule::HardwareSpec hardware;
};

// Sustained TFLOP/s of one rank of `config`: on a CPU job (run.device cpu) `cpu_threads` cores
// at hardware.cpu_gflops_per_core, else one GPU at hardware.gpu_tflops; times mfu_assumed.
double rank_sustained_tflops(const JobConfig& config, int cpu_threads);

// Work of one micro-batch of `config` on one rank of its tensor-parallel group, priced at
// rank_sustained_tflops(config, cpu_threads).
// Forward matmuls cost 2 FLOP per parameter and token; the input-grad (B) and weight-grad (W)
// halves of the backward cost the same each; causal attention adds its score/value products to
// F (once) and B (twice: gradients of queries, keys and values), none to W. The expert
// all-to-all of each MoE layer moves tokens * K * hidden bf16 values out and back (dispatch and
// combine), of which (ep-1)/ep leave the rank.
JobWork job_work(const JobConfig& config, int cpu_threads = 1);

}  // namespace tandem::launch
