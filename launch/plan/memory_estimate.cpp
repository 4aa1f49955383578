// Per-rank memory estimate (see memory_estimate.h). Formulas:
//  weights, grads, optimizer: parallel::zero_memory_bytes (parallel/zero_memory.h), the formula
//  the data-parallel optimizer's measured buffers follow: w = 2 bytes bf16 (+ 4 fp32 master in
//  the optimizer state), 4 fp32; grads fp32; sharded over the replication group by ZeRO stage,
//  ZeRO-3 keeping the parameters outside decoder layers (embedding, final norm, head) whole
//  activations = peak live micro-batch chunks (from simulating the schedule) * the bytes one
//                micro-batch of a chunk keeps for backward, counted tensor by tensor below from
//                what each op of model/ saves (activation_bytes_per_token), under train.recompute.
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

namespace {

// How activations are stored: element width (2 under bf16 autocast, 4 in fp32), the tensor-
// parallel split and whether selective recomputation drops the attention inputs.
struct ActivationShape {
  double width = 4.0;
  int64_t tp = 1;
  bool sequence_parallel = false;
  bool selective = false;
};

// The residual stream stays fp32 under autocast: fp32 embeddings plus bf16 branch outputs
// promote to fp32 (docs/model.md#numerics). Statistics (rstd, log-sum-exp) are fp32.
constexpr double kResidualWidth = 4.0;
constexpr double kStatWidth = 4.0;

// Bytes one token keeps for backward in decoder layer `layer` (global index; MTP blocks are
// N..N+D-1), per tensor-parallel rank. `whole_layer`: full recomputation keeps only the input.
double activation_bytes_per_token(const model::ModelConfig& m, int64_t layer, const ActivationShape& s,
                                  bool whole_layer) {
  const double a = s.width;
  const double h = static_cast<double>(m.hidden_size);
  const double tp = static_cast<double>(s.tp);
  // Token-sized tensors outside the tensor-parallel regions are split over tp only under
  // sequence parallelism; per-head tensors always are.
  const double rows = s.sequence_parallel ? 1.0 / tp : 1.0;
  const double heads = static_cast<double>(m.num_attention_heads) / tp;
  const double input = kResidualWidth * h * rows;  // the layer's input, saved by its first norm
  if (whole_layer) return input;

  double attention_inputs = 0;  // norm output, projections and latents up to the core's q, k, v
  double core_inputs = 0;       // q, k, v: saved by the attention core
  double value_width = 0;       // per head: of v and of the core's output
  if (m.uses_gqa()) {
    const double hd = static_cast<double>(m.gqa_head_dim());
    value_width = hd;
    attention_inputs = a * h * rows + kStatWidth * rows;
    core_inputs = a * hd * (heads + 2.0 * std::max(heads, static_cast<double>(m.num_key_value_heads) / tp));
  } else {
    const double dn = static_cast<double>(m.qk_nope_head_dim), dr = static_cast<double>(m.qk_rope_head_dim);
    const double dv = static_cast<double>(m.v_head_dim), rkv = static_cast<double>(m.kv_lora_rank);
    value_width = dv;
    attention_inputs = a * h * rows + kStatWidth * rows;                                   // normed input
    if (m.q_lora_rank) attention_inputs += 2.0 * a * static_cast<double>(*m.q_lora_rank);  // q latent, normed
    attention_inputs += a * (rkv + dr) + a * rkv;      // compressed kv, normed latent
    core_inputs = a * heads * (2.0 * (dn + dr) + dv);  // q, k (nope and rotary), v
  }
  if (s.selective) attention_inputs = 0;
  const double core = 2.0 * a * heads * value_width + kStatWidth * heads;  // SDPA output, merged heads, lse

  double ffn = kResidualWidth * h * rows + kStatWidth * rows + a * h * rows;  // post-attention norm in, out
  if (m.is_moe_layer(layer)) {
    const double k = static_cast<double>(m.num_experts_per_tok);
    const double width = static_cast<double>(m.moe_intermediate_size);
    const double shared = static_cast<double>(m.n_shared_experts) * width / tp;
    // Each tp rank routes its share of the tokens (docs/model.md#moe-layer).
    const double routed_share = s.sequence_parallel ? rows : 1.0 / tp;
    ffn += (a < 4.0 ? 4.0 * h * routed_share : 0.0) + 4.0 * static_cast<double>(m.n_routed_experts) * routed_share;
    ffn += routed_share * k * (2.0 * a * h + 3.0 * a * width);  // permuted rows, gate/up, product, expert outputs
    ffn += 3.0 * a * shared;
  } else {
    ffn += 3.0 * a * static_cast<double>(m.intermediate_size) / tp;
  }
  return input + attention_inputs + core_inputs + core + ffn;
}

// Bytes per token of the micro-batch that the last stage keeps outside its decoder layers: the
// final norm, the MTP modules (each a decoder layer behind its own norms and projection; never
// recomputed whole) and the head with its cross-entropy, whose fp32 log-probabilities [rows, V/tp]
// are the largest part for big vocabularies.
double head_activation_bytes_per_token(const model::ModelConfig& m, const ActivationShape& s) {
  const double a = s.width;
  const double h = static_cast<double>(m.hidden_size);
  const double vocab = static_cast<double>(m.vocab_size) / static_cast<double>(s.tp);
  const double depths = static_cast<double>(m.num_nextn_predict_layers);
  const double rows = s.sequence_parallel ? 1.0 / static_cast<double>(s.tp) : 1.0;
  double bytes = (kResidualWidth + a) * h * rows + kStatWidth * rows;  // final norm in and out
  for (int64_t depth = 1; depth <= m.num_nextn_predict_layers; ++depth) {
    // embedding, enorm/hnorm outputs, their concatenation, the block, shared_head.norm in and out
    bytes += kResidualWidth * h + 4.0 * a * h + 2.0 * a * h;
    bytes += activation_bytes_per_token(m, m.num_hidden_layers + depth - 1, s, /*whole_layer=*/false);
  }
  bytes += (1.0 + depths) * (a * h + 4.0 * vocab);  // head input rows, fp32 log-probabilities
  return bytes;
}

// What one rank holds for its model chunks, summed over them (before ZeRO and the schedule).
struct ChunkTotals {
  double dense_params = 0, routed_params = 0, persistent_params = 0;
  double activation_per_chunk = 0;  // bytes of one micro-batch, summed over the rank's chunks
  double transient = 0;             // bytes alive once, whatever the number of live micro-batches
};

void add_stage(const JobConfig& config, const model::StageSpec& spec, const ActivationShape& shape,
               ChunkTotals& totals) {
  const model::ModelConfig& m = config.model;
  const parallel::ParallelConfig& p = config.parallel;
  const model::RecomputePolicy recompute = config.train.recompute_policy();
  const int64_t routed_per_layer = m.n_routed_experts * model::expert_params(m);
  const int64_t tokens = config.data.micro_batch_size * config.data.seq_length;
  const int64_t all = model::stage_params(m, spec.layer_begin, spec.layer_end, spec.is_first(), spec.is_last());
  int64_t routed = 0;
  // The MTP modules (on the last stage) are MoE layers too: their routed experts split over ep.
  const int64_t mtp_layers = spec.is_last() ? m.num_nextn_predict_layers : 0;
  for (int64_t layer = 0; layer < mtp_layers; ++layer) {
    if (m.is_moe_layer(m.num_hidden_layers + layer)) routed += routed_per_layer;
  }
  for (int64_t layer = spec.layer_begin; layer < spec.layer_end; ++layer) {
    if (m.is_moe_layer(layer)) routed += routed_per_layer;
    const bool whole_layer = recompute.recomputes_whole_layer(layer - spec.layer_begin);
    totals.activation_per_chunk += tokens * activation_bytes_per_token(m, layer, shape, whole_layer);
  }
  // Alive once, not per live micro-batch: the gradient of the first cross-entropy that
  // backward computes (fp32 [rows, V/tp] twice), or a fully recomputed layer's whole
  // activations while its backward runs.
  if (spec.is_last()) {
    totals.activation_per_chunk += tokens * head_activation_bytes_per_token(m, shape);
    totals.transient = std::max(totals.transient, tokens * 2.0 * 4.0 * static_cast<double>(m.vocab_size) / p.tp);
  }
  if (recompute.mode == model::RecomputeMode::kFull && spec.layer_end > spec.layer_begin) {
    totals.transient =
        std::max(totals.transient, tokens * activation_bytes_per_token(m, spec.layer_begin, shape, false));
  }
  totals.dense_params += static_cast<double>(all - routed) / p.tp;
  // Outside decoder layers: embedding (or its copy), final norm, head; not the MTP modules.
  int64_t outside_layers = model::stage_params(m, 0, 0, spec.is_first(), spec.is_last());
  for (int64_t depth = 1; depth <= mtp_layers; ++depth) outside_layers -= model::mtp_module_params(m, depth);
  totals.persistent_params += static_cast<double>(outside_layers) / p.tp;
  totals.routed_params += static_cast<double>(routed) / p.ep;
}

}  // namespace

std::vector<RankMemory> estimate_memory(const JobConfig& config, Precision precision, int64_t zero_stage) {
  TANDEM_CHECK(precision != Precision::kAuto, "estimate_memory needs a resolved precision (resolve_precision)");
  const bool bf16 = precision == Precision::kBf16;
  const parallel::ParallelConfig& p = config.parallel;
  const schedule::ScheduleKind kind = p.pipeline.schedule;
  const int chunks = pipeline_chunks(p.pipeline);
  const schedule::Placement placement =
      schedule::placement_for(kind, static_cast<int>(p.pp), chunks, static_cast<int>(p.pipeline.micro_batches));
  // Peak live activation chunks per rank, from playing the schedule itself (unit costs: the
  // order, not the timing, decides what is alive at once).
  const schedule::SimResult played = schedule::simulate(
      schedule::generate(kind, static_cast<int>(p.pp), static_cast<int>(p.pipeline.micro_batches), chunks));
  const std::vector<model::StageSpec> specs = model::partition_layers(config.model, placement.num_stages());
  const double weight_width = bf16 ? 2.0 : 4.0;
  const double master_width = bf16 ? 4.0 : 0.0;
  const int64_t dp = std::max<int64_t>(p.dp, 1);
  ActivationShape shape;
  shape.width = bf16 ? 2.0 : 4.0;
  shape.tp = p.tp;
  shape.sequence_parallel = p.sequence_parallel && p.tp > 1;
  shape.selective = config.train.recompute_policy().selective();

  std::vector<RankMemory> ranks;
  for (int64_t rank = 0; rank < p.pp; ++rank) {
    ChunkTotals totals;
    for (int chunk = 0; chunk < chunks; ++chunk) {
      add_stage(config, specs[static_cast<size_t>(placement.stage_of(static_cast<int>(rank), chunk))], shape, totals);
    }
    RankMemory memory;
    memory.pp_rank = rank;
    memory.params = static_cast<int64_t>(totals.dense_params + totals.routed_params);
    // ZeRO shards over the group that replicates each parameter: dp for dense, edp for experts.
    parallel::ZeroParamCounts counts;
    counts.dense = totals.dense_params;
    counts.dense_persistent = totals.persistent_params;
    counts.experts = totals.routed_params;
    counts.dp = dp;
    counts.edp = dp * p.tp / p.ep;
    const parallel::ZeroMemoryBytes bytes =
        parallel::zero_memory_bytes(counts, zero_stage < 0 ? p.zero : zero_stage, weight_width, master_width);
    memory.weight_bytes = bytes.param_bytes;
    memory.grad_bytes = bytes.grad_bytes;
    memory.optimizer_bytes = bytes.optimizer_bytes;
    memory.live_microbatches = played.ranks[static_cast<size_t>(rank)].peak_live_chunks;
    memory.activation_bytes = totals.activation_per_chunk / chunks * static_cast<double>(memory.live_microbatches) +
                              totals.transient;
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
