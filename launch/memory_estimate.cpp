// Per-rank memory estimate (see memory_estimate.h). Formulas:
//  weights   = params * w (w = 2 bytes bf16, 4 fp32)
//  grads     = params * 4 (fp32 gradient buffer), / dp under ZeRO-2 and -3
//  optimizer = params * (8 Adam m,v + 4 fp32 master when mixed precision), / dp under ZeRO >= 1
//  weights are / dp under ZeRO-3 (gathered one layer at a time, which adds one layer back)
//  activations = live micro-batch chunks * layers per chunk * tokens * bytes per token-layer,
//  bytes per token-layer ~ w * (17 h / tp + 3 * width of the MLP or of the K+shared experts):
//  the inputs saved for backward by norms, projections, attention and SwiGLU, no recompute.
// Non-expert parameters are split over tp and replicated over dp; routed experts are split over
// ep and replicated over the expert-data-parallel group (dp*tp/ep ranks).
#include "launch/memory_estimate.h"

#include <algorithm>

#include "model/model_size.h"
#include "schedule/generators.h"

namespace tandem::launch {
namespace {

// Decoder layers [begin, end) of each of `num_stages` stages: as even as possible, the earlier
// stages taking the remainder (the last stage also carries head and MTP).
std::vector<std::pair<int64_t, int64_t>> layer_ranges(int64_t num_layers, int64_t num_stages) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t begin = 0;
  for (int64_t stage = 0; stage < num_stages; ++stage) {
    const int64_t count = num_layers / num_stages + (stage < num_layers % num_stages ? 1 : 0);
    ranges.emplace_back(begin, begin + count);
    begin += count;
  }
  return ranges;
}

// Peak live activation chunks on pipeline rank `rank` (DUALPIPE.md's table; 1F1B-family warm-up).
int64_t live_chunks(schedule::ScheduleKind kind, int64_t rank, int64_t pp, int64_t micro_batches, int64_t chunks) {
  switch (kind) {
    case schedule::ScheduleKind::kGpipe: return micro_batches;
    case schedule::ScheduleKind::kDualPipe: return std::min<int64_t>(pp + 1, micro_batches);
    case schedule::ScheduleKind::kDualPipeV: return std::min<int64_t>(2 * pp, 2 * micro_batches);
    case schedule::ScheduleKind::kInterleaved:
      return std::min<int64_t>((pp - rank) * chunks + (chunks - 1) * pp, micro_batches * chunks);
    default: return std::min<int64_t>(pp - rank, micro_batches);
  }
}

}  // namespace

std::vector<RankMemory> estimate_memory(const JobConfig& config, bool bf16) {
  const model::ModelConfig& m = config.model;
  const parallel::ParallelConfig& p = config.parallel;
  const auto kind = schedule::parse_schedule_kind(p.pipeline.schedule);
  const int chunks = kind == schedule::ScheduleKind::kInterleaved ? static_cast<int>(p.pipeline.virtual_stages)
                                                                   : schedule::default_num_chunks(kind);
  const schedule::Placement placement =
      schedule::placement_for(kind, static_cast<int>(p.pp), chunks, static_cast<int>(p.pipeline.micro_batches));
  const int64_t num_stages = placement.num_stages();
  const auto ranges = layer_ranges(m.num_hidden_layers, num_stages);
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
    double dense_params = 0, routed_params = 0, activation_per_chunk = 0;
    for (int chunk = 0; chunk < chunks; ++chunk) {
      const int64_t stage = placement.stage_of(static_cast<int>(rank), chunk);
      const auto [begin, end] = ranges[stage];
      const int64_t all = model::stage_params(m, begin, end, stage == 0, stage == num_stages - 1);
      int64_t routed = 0;
      for (int64_t layer = begin; layer < end; ++layer) {
        if (m.is_moe_layer(layer)) routed += routed_per_layer;
        const double mlp_width = m.is_moe_layer(layer)
                                     ? static_cast<double>(m.num_experts_per_tok + m.n_shared_experts) * m.moe_intermediate_size
                                     : static_cast<double>(m.intermediate_size) / p.tp;
        activation_per_chunk += weight_width * tokens * (17.0 * m.hidden_size / p.tp + 3.0 * mlp_width);
      }
      dense_params += static_cast<double>(all - routed) / p.tp;
      routed_params += static_cast<double>(routed) / p.ep;
    }
    const double params = dense_params + routed_params;
    memory.params = static_cast<int64_t>(params);
    // ZeRO shards over the group that replicates each parameter: dp for dense, edp for experts.
    auto sharded = [&](double bytes_per_param, bool shard) {
      return shard ? bytes_per_param * (dense_params / dp + routed_params / edp) : bytes_per_param * params;
    };
    memory.weight_bytes = sharded(weight_width, p.zero >= 3);
    memory.grad_bytes = sharded(4.0, p.zero >= 2);
    memory.optimizer_bytes = sharded(8.0 + master_width, p.zero >= 1);
    memory.live_microbatches = live_chunks(kind, rank, p.pp, p.pipeline.micro_batches, chunks);
    memory.activation_bytes = activation_per_chunk / chunks * static_cast<double>(memory.live_microbatches);
    ranks.push_back(memory);
  }
  return ranks;
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
