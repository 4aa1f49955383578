// Per-rank memory estimate (see memory_estimate.h). Formulas:
//  weights, grads, optimizer: parallel::zero_memory_bytes (parallel/zero_memory.h), the formula
//  the data-parallel optimizer's measured buffers follow: w = 2 bytes bf16 (+ 4 fp32 master in
//  the optimizer state), 4 fp32; grads fp32; sharded over the replication group by ZeRO stage,
//  ZeRO-3 keeping the parameters outside decoder layers (embedding, final norm, head) whole
//  activations = peak live micro-batch chunks (from simulating the schedule) * layers per chunk
//                * tokens * bytes per token-layer,
//  bytes per token-layer ~ w * (17 h / tp + 3 * width of the MLP or of the K+shared experts):
//  the inputs saved for backward by norms, projections, attention and SwiGLU, no recompute.
// Non-expert parameters are split over tp and replicated over dp; routed experts are split over
// ep and replicated over the expert-data-parallel group (dp*tp/ep ranks).
#include "launch/plan/memory_estimate.h"

#include <algorithm>

#include "model/model_size.h"
#include "model/stage.h"
#include "parallel/zero_memory.h"
#include "schedule/generators.h"
#include "schedule/simulator.h"

namespace tandem::launch {

std::vector<RankMemory> estimate_memory(const JobConfig& config, Precision precision, int64_t zero_stage) {
  TANDEM_CHECK(precision != Precision::kAuto, "estimate_memory needs a resolved precision (resolve_precision)");
  const bool bf16 = precision == Precision::kBf16;
  const model::ModelConfig& m = config.model;
  const parallel::ParallelConfig& p = config.parallel;
  const schedule::ScheduleKind kind = p.pipeline.schedule;
  const int chunks = pipeline_chunks(p.pipeline);
  const schedule::Placement placement =
      schedule::placement_for(kind, static_cast<int>(p.pp), chunks, static_cast<int>(p.pipeline.micro_batches));
  const int64_t num_stages = placement.num_stages();
  // Peak live activation chunks per rank, from playing the schedule itself (unit costs: the
  // order, not the timing, decides what is alive at once).
  const schedule::SimResult played = schedule::simulate(
      schedule::generate(kind, static_cast<int>(p.pp), static_cast<int>(p.pipeline.micro_batches), chunks));
  const std::vector<model::StageSpec> specs = model::partition_layers(m, num_stages);
  const double weight_width = bf16 ? 2.0 : 4.0;
  const double master_width = bf16 ? 4.0 : 0.0;
  const int64_t dp = std::max<int64_t>(p.dp, 1);
  const int64_t edp = dp * p.tp / p.ep;
  const int64_t routed_per_layer = m.n_routed_experts * model::expert_params(m);
  const int64_t tokens = config.data.micro_batch_size * config.data.seq_length;

  std::vector<RankMemory> ranks;
  for (int64_t rank = 0; rank < p.pp; ++rank) {
    RankMemory memory;
    memory.pp_rank = rank;
    double dense_params = 0, routed_params = 0, persistent_params = 0, activation_per_chunk = 0;
    for (int chunk = 0; chunk < chunks; ++chunk) {
      const int64_t stage = placement.stage_of(static_cast<int>(rank), chunk);
      const model::StageSpec& spec = specs[static_cast<size_t>(stage)];
      const int64_t all = model::stage_params(m, spec.layer_begin, spec.layer_end, spec.is_first(), spec.is_last());
      int64_t routed = 0;
      // The MTP modules (on the last stage) are MoE layers too: their routed experts split over ep.
      const int64_t mtp_layers = spec.is_last() ? m.num_nextn_predict_layers : 0;
      for (int64_t layer = 0; layer < mtp_layers; ++layer) {
        if (m.is_moe_layer(m.num_hidden_layers + layer)) routed += routed_per_layer;
      }
      for (int64_t layer = spec.layer_begin; layer < spec.layer_end; ++layer) {
        if (m.is_moe_layer(layer)) routed += routed_per_layer;
        const double mlp_width = m.is_moe_layer(layer)
                                     ? static_cast<double>(m.num_experts_per_tok + m.n_shared_experts) *
                                           m.moe_intermediate_size
                                     : static_cast<double>(m.intermediate_size) / p.tp;
        activation_per_chunk += weight_width * tokens * (17.0 * m.hidden_size / p.tp + 3.0 * mlp_width);
      }
      dense_params += static_cast<double>(all - routed) / p.tp;
      // Outside decoder layers: embedding (or its copy), final norm, head; not the MTP modules.
      int64_t outside_layers = model::stage_params(m, 0, 0, spec.is_first(), spec.is_last());
      for (int64_t depth = 1; depth <= mtp_layers; ++depth) outside_layers -= model::mtp_module_params(m, depth);
      persistent_params += static_cast<double>(outside_layers) / p.tp;
      routed_params += static_cast<double>(routed) / p.ep;
    }
    const double params = dense_params + routed_params;
    memory.params = static_cast<int64_t>(params);
    // ZeRO shards over the group that replicates each parameter: dp for dense, edp for experts.
    parallel::ZeroParamCounts counts;
    counts.dense = dense_params;
    counts.dense_persistent = persistent_params;
    counts.experts = routed_params;
    counts.dp = dp;
    counts.edp = edp;
    const parallel::ZeroMemoryBytes bytes =
        parallel::zero_memory_bytes(counts, zero_stage < 0 ? p.zero : zero_stage, weight_width, master_width);
    memory.weight_bytes = bytes.param_bytes;
    memory.grad_bytes = bytes.grad_bytes;
    memory.optimizer_bytes = bytes.optimizer_bytes;
    memory.live_microbatches = played.ranks[static_cast<size_t>(rank)].peak_live_chunks;
    memory.activation_bytes = activation_per_chunk / chunks * static_cast<double>(memory.live_microbatches);
    ranks.push_back(memory);
  }
  return ranks;
}

Precision estimated_precision(const JobConfig& config) {
  return resolve_precision(config.train.precision, resolve_device(config.run.device, /*gpu_usable=*/true));
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", bytes, units[unit]);
}

}  // namespace tandem::launch
