// Rules that span fields or sections of a job (see JobConfig::resolve_and_validate). Rules
// about a single value (types, bounds, choices) are enforced while loading; rules of one
// module's section are that module's validate().
#include "launch/config/job_config.h"

#include "parallel/grid_layout.h"
#include "schedule/generators.h"

namespace tandem::launch {

void JobConfig::resolve_and_validate(int64_t world_size) {
  model.validate();

  // Layout: world = pp * dp * tp, ep divides dp * tp, order is a permutation.
  const auto layout = parallel::GridLayout::create(world_size, parallel.pp, parallel.dp, parallel.tp, parallel.ep,
                                                   parallel.order);
  parallel.dp = layout.dp_size();

  // Tensor parallelism splits heads and experts' neighbours evenly.
  const int64_t tp = parallel.tp;
  TANDEM_CONFIG_REQUIRE(model.num_attention_heads % tp == 0, "parallel.tp",
                        "model.num_attention_heads = {} is not divisible by tp = {}", model.num_attention_heads, tp);
  if (model.attention_type == "gqa") {
    TANDEM_CONFIG_REQUIRE(model.num_key_value_heads % tp == 0, "parallel.tp",
                          "model.num_key_value_heads = {} is not divisible by tp = {}", model.num_key_value_heads, tp);
  }
  TANDEM_CONFIG_REQUIRE(model.intermediate_size % tp == 0, "parallel.tp",
                        "model.intermediate_size = {} is not divisible by tp = {}", model.intermediate_size, tp);
  TANDEM_CONFIG_REQUIRE(model.vocab_size % tp == 0, "parallel.tp",
                        "model.vocab_size = {} is not divisible by tp = {} (the embedding and output head are split "
                        "over the vocabulary)",
                        model.vocab_size, tp);
  const int64_t shared_width = model.n_shared_experts * model.moe_intermediate_size;
  TANDEM_CONFIG_REQUIRE(model.n_routed_experts == 0 || shared_width % tp == 0, "parallel.tp",
                        "the shared experts' width n_shared_experts * moe_intermediate_size = {} * {} is not divisible "
                        "by tp = {}",
                        model.n_shared_experts, model.moe_intermediate_size, tp);
  TANDEM_CONFIG_REQUIRE(!parallel.sequence_parallel || tp > 1, "parallel.sequence_parallel",
                        "sequence parallelism needs tp > 1 (got tp = {})", tp);
  TANDEM_CONFIG_REQUIRE(!parallel.sequence_parallel || data.seq_length % tp == 0, "data.seq_length",
                        "with sequence parallelism, seq_length = {} must be divisible by tp = {}", data.seq_length, tp);

  // Expert parallelism splits routed experts evenly over the ep ranks.
  if (parallel.ep > 1) {
    TANDEM_CONFIG_REQUIRE(model.n_routed_experts > 0, "parallel.ep",
                          "ep = {} needs an MoE model (model.n_routed_experts is 0)", parallel.ep);
    TANDEM_CONFIG_REQUIRE(model.n_routed_experts % parallel.ep == 0, "parallel.ep",
                          "model.n_routed_experts = {} is not divisible by ep = {}", model.n_routed_experts, parallel.ep);
  }

  // Batch arithmetic: the global batch splits into whole micro-batches on every dp rank.
  const int64_t per_step = data.micro_batch_size * parallel.dp;
  TANDEM_CONFIG_REQUIRE(data.global_batch_size % per_step == 0, "data.global_batch_size",
                        "global_batch_size = {} is not a multiple of micro_batch_size * dp = {} * {} = {}",
                        data.global_batch_size, data.micro_batch_size, parallel.dp, per_step);
  const int64_t micro_batches = data.global_batch_size / per_step;
  TANDEM_CONFIG_REQUIRE(parallel.pipeline.micro_batches == 0 || parallel.pipeline.micro_batches == micro_batches,
                        "parallel.pipeline.micro_batches",
                        "is {}, but global_batch_size / (micro_batch_size * dp) = {} / ({} * {}) = {}; set it to {} "
                        "or to 0 (derived)",
                        parallel.pipeline.micro_batches, data.global_batch_size, data.micro_batch_size, parallel.dp,
                        micro_batches, micro_batches);
  parallel.pipeline.micro_batches = micro_batches;

  // Pipeline: the schedule's own preconditions, and enough layers for every stage.
  const auto kind = schedule::parse_schedule_kind(parallel.pipeline.schedule);
  TANDEM_CONFIG_REQUIRE(kind == schedule::ScheduleKind::kInterleaved || parallel.pipeline.virtual_stages == 1,
                        "parallel.pipeline.virtual_stages",
                        "virtual_stages = {} only applies to the interleaved schedule (schedule is {})",
                        parallel.pipeline.virtual_stages, parallel.pipeline.schedule);
  TANDEM_CONFIG_REQUIRE(kind != schedule::ScheduleKind::kInterleaved || parallel.pipeline.virtual_stages >= 2,
                        "parallel.pipeline.virtual_stages",
                        "the interleaved schedule needs virtual_stages >= 2 model chunks per pipeline rank (got {}); "
                        "with one chunk per rank use schedule 1f1b",
                        parallel.pipeline.virtual_stages);
  const int num_chunks = kind == schedule::ScheduleKind::kInterleaved
                             ? static_cast<int>(parallel.pipeline.virtual_stages)
                             : schedule::default_num_chunks(kind);
  const auto violation = schedule::precondition_violation(kind, static_cast<int>(parallel.pp),
                                                          static_cast<int>(micro_batches), num_chunks);
  TANDEM_CONFIG_REQUIRE(!violation, "parallel.pipeline.schedule", "{} (micro_batches = {}, pp = {})",
                        violation.value_or(""), micro_batches, parallel.pp);
  const int64_t num_stages =
      schedule::placement_for(kind, static_cast<int>(parallel.pp), num_chunks, static_cast<int>(micro_batches))
          .num_stages();
  TANDEM_CONFIG_REQUIRE(model.num_hidden_layers >= num_stages, "model.num_hidden_layers",
                        "{} layers cannot fill {} pipeline stages ({} with pp = {}); use fewer stages or more layers",
                        model.num_hidden_layers, num_stages, parallel.pipeline.schedule, parallel.pp);

  TANDEM_CONFIG_REQUIRE(data.seq_length <= model.max_position_embeddings, "data.seq_length",
                        "seq_length = {} exceeds model.max_position_embeddings = {}", data.seq_length,
                        model.max_position_embeddings);
  TANDEM_CONFIG_REQUIRE(data.tokenizer != "byte" || model.vocab_size >= 259, "model.vocab_size",
                        "the byte tokenizer needs vocab_size >= 259 (256 bytes + BOS/EOD/PAD), got {}",
                        model.vocab_size);

  TANDEM_CONFIG_REQUIRE(optim.min_lr <= optim.lr, "optim.min_lr", "min_lr = {} is larger than lr = {}", optim.min_lr,
                        optim.lr);
  TANDEM_CONFIG_REQUIRE(run.output_dir.size() > 0, "run.output_dir", "must not be empty");
  // Steps after train.steps are allowed (a shortened run of a job that traces a later step) and
  // simply never traced; the trainer says so at start.
  for (int64_t step : logging.trace_steps) {
    TANDEM_CONFIG_REQUIRE(step >= 1, "logging.trace_steps", "step {} is not an optimizer step (they count from 1)",
                          step);
  }
}

}  // namespace tandem::launch
