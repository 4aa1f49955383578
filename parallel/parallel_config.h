// ParallelConfig: how the ranks of a job are laid out (DESIGN.md section 2) and how the
// pipeline is scheduled. world = pp * dp * tp; ep folds into the dp*tp domain.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/config_schema.h"
#include "schedule/ir.h"

namespace tandem::parallel {

// parallel.backend: what moves device tensors between the ranks of a GPU run.
enum class BackendKind { kAuto, kMpi, kNccl };
inline constexpr config::EnumNames<BackendKind, 3> kBackendKindNames{
    {{BackendKind::kAuto, "auto"}, {BackendKind::kMpi, "mpi"}, {BackendKind::kNccl, "nccl"}}};
constexpr const auto& config_enum_names(BackendKind) { return kBackendKindNames; }

struct PipelineConfig {
  schedule::ScheduleKind schedule = schedule::ScheduleKind::k1F1B;
  int64_t micro_batches = 0;   // micro-batches per optimizer step; 0 = derived from the batch
  int64_t virtual_stages = 1;  // chunks per rank for interleaved 1F1B

  template <class V>
  void visit(V& v) {
    v("schedule", schedule, {.doc = "Pipeline schedule"});
    v("micro_batches", micro_batches,
      {.doc = "Micro-batches per optimizer step on each data-parallel rank; 0 = global_batch_size / "
              "(micro_batch_size * dp). When set, it must equal that quotient",
       .min = 0});
    v("virtual_stages", virtual_stages,
      {.doc = "Model chunks per pipeline rank (interleaved schedule only)", .min = 1});
  }
};

struct ParallelConfig {
  int64_t pp = 1;
  int64_t dp = 0;  // 0 = world / (pp * tp)
  int64_t tp = 1;
  int64_t ep = 1;
  int64_t zero = 0;
  std::string order = "tp-dp-pp";
  bool sequence_parallel = false;
  double grad_bucket_mb = 25.0;
  BackendKind backend = BackendKind::kAuto;
  PipelineConfig pipeline;

  template <class V>
  void visit(V& v) {
    v("pp", pp, {.doc = "Pipeline-parallel degree", .min = 1});
    v("dp", dp, {.doc = "Data-parallel degree; 0 means world size / (pp * tp)", .min = 0});
    v("tp", tp, {.doc = "Tensor-parallel degree", .min = 1});
    v("ep", ep, {.doc = "Expert-parallel degree; must divide dp * tp", .min = 1});
    v("zero", zero,
      {.doc = "ZeRO stage: 0 none, 1 optimizer state, 2 + gradients, 3 + parameters", .min = 0, .max = 3});
    v("order", order, {.doc = "Rank layout, innermost axis first (a permutation of tp, dp, pp joined by '-')"});
    v("sequence_parallel", sequence_parallel, {.doc = "Shard activations along the sequence between TP regions"});
    v("grad_bucket_mb", grad_bucket_mb, {.doc = "Data-parallel gradient bucket size in MiB", .min = 0.001});
    v("backend", backend,
      {.doc = "Communication backend of GPU runs: mpi (device tensors staged through the host), nccl (NCCL for "
              "device tensors and MPI for host ones; the pipeline group stays on MPI) or auto (mpi until the NCCL "
              "path is validated on GPUs); CPU runs use MPI"});
    v.section("pipeline", pipeline, "Pipeline schedule");
  }
};

}  // namespace tandem::parallel
