// Rules that span fields or sections of a job (see JobConfig::resolve_and_validate). Rules
// about a single value (types, bounds, choices) are enforced while loading; rules of one
// module's section are that module's validate().
#include "launch/config/job_config.h"

#include "parallel/grid_layout.h"
#include "schedule/generators.h"

namespace tandem::launch {

namespace {

// Tensor parallelism splits heads, MLP widths and the vocabulary evenly.
void check_tensor_parallel(const JobConfig& c) {
  const model::ModelConfig& model = c.model;
  const int64_t tp = c.parallel.tp;
  TANDEM_CONFIG_REQUIRE(model.num_attention_heads % tp == 0, "parallel.tp",
                        "model.num_attention_heads = {} is not divisible by tp = {}", model.num_attention_heads, tp);
  if (model.uses_gqa()) {
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
  TANDEM_CONFIG_REQUIRE(!c.parallel.sequence_parallel || tp > 1, "parallel.sequence_parallel",
                        "sequence parallelism needs tp > 1 (got tp = {})", tp);
  TANDEM_CONFIG_REQUIRE(!c.parallel.sequence_parallel || c.data.seq_length % tp == 0, "data.seq_length",
                        "with sequence parallelism, seq_length = {} must be divisible by tp = {}", c.data.seq_length,
                        tp);
}

// Expert parallelism splits routed experts evenly over the ep ranks.
void check_expert_parallel(const JobConfig& c) {
  if (c.parallel.ep <= 1) return;
  TANDEM_CONFIG_REQUIRE(c.model.n_routed_experts > 0, "parallel.ep",
                        "ep = {} needs an MoE model (model.n_routed_experts is 0)", c.parallel.ep);
  TANDEM_CONFIG_REQUIRE(c.model.n_routed_experts % c.parallel.ep == 0, "parallel.ep",
                        "model.n_routed_experts = {} is not divisible by ep = {}", c.model.n_routed_experts,
                        c.parallel.ep);
}

// The global batch splits into whole micro-batches on every dp rank: returns their count.
int64_t resolve_micro_batches(const JobConfig& c) {
  const int64_t per_step = c.data.micro_batch_size * c.parallel.dp;
  TANDEM_CONFIG_REQUIRE(c.data.global_batch_size % per_step == 0, "data.global_batch_size",
                        "global_batch_size = {} is not a multiple of micro_batch_size * dp = {} * {} = {}",
                        c.data.global_batch_size, c.data.micro_batch_size, c.parallel.dp, per_step);
  const int64_t micro_batches = c.data.global_batch_size / per_step;
  const int64_t set = c.parallel.pipeline.micro_batches;
  TANDEM_CONFIG_REQUIRE(set == 0 || set == micro_batches, "parallel.pipeline.micro_batches",
                        "is {}, but global_batch_size / (micro_batch_size * dp) = {} / ({} * {}) = {}; set it to {} "
                        "or to 0 (derived)",
                        set, c.data.global_batch_size, c.data.micro_batch_size, c.parallel.dp, micro_batches,
                        micro_batches);
  return micro_batches;
}

// The schedule's own preconditions, and enough layers for every stage.
void check_pipeline(const JobConfig& c) {
  const parallel::PipelineConfig& pipeline = c.parallel.pipeline;
  const schedule::ScheduleKind kind = pipeline.schedule;
  TANDEM_CONFIG_REQUIRE(kind == schedule::ScheduleKind::kInterleaved || pipeline.virtual_stages == 1,
                        "parallel.pipeline.virtual_stages",
                        "virtual_stages = {} only applies to the interleaved schedule (schedule is {})",
                        pipeline.virtual_stages, config::enum_name(kind));
  TANDEM_CONFIG_REQUIRE(kind != schedule::ScheduleKind::kInterleaved || pipeline.virtual_stages >= 2,
                        "parallel.pipeline.virtual_stages",
                        "the interleaved schedule needs virtual_stages >= 2 model chunks per pipeline rank (got {}); "
                        "with one chunk per rank use schedule 1f1b",
                        pipeline.virtual_stages);
  const int num_chunks = pipeline_chunks(pipeline);
  const auto pp = static_cast<int>(c.parallel.pp);
  const auto micro_batches = static_cast<int>(pipeline.micro_batches);
  const auto violation = schedule::precondition_violation(kind, pp, micro_batches, num_chunks);
  TANDEM_CONFIG_REQUIRE(!violation, "parallel.pipeline.schedule", "{} (micro_batches = {}, pp = {})",
                        violation.value_or(""), micro_batches, pp);
  const int64_t num_stages = schedule::placement_for(kind, pp, num_chunks, micro_batches).num_stages();
  TANDEM_CONFIG_REQUIRE(c.model.num_hidden_layers >= num_stages, "model.num_hidden_layers",
                        "{} layers cannot fill {} pipeline stages ({} with pp = {}); use fewer stages or more layers",
                        c.model.num_hidden_layers, num_stages, config::enum_name(kind), pp);
}

// Data, optimizer, output and logging rules.
void check_run(const JobConfig& c) {
  TANDEM_CONFIG_REQUIRE(c.data.seq_length <= c.model.max_position_embeddings, "data.seq_length",
                        "seq_length = {} exceeds model.max_position_embeddings = {}", c.data.seq_length,
                        c.model.max_position_embeddings);
  TANDEM_CONFIG_REQUIRE(c.data.tokenizer != "byte" || c.model.vocab_size >= 259, "model.vocab_size",
                        "the byte tokenizer needs vocab_size >= 259 (256 bytes + BOS/EOD/PAD), got {}",
                        c.model.vocab_size);
  TANDEM_CONFIG_REQUIRE(c.optim.min_lr <= c.optim.lr, "optim.min_lr", "min_lr = {} is larger than lr = {}",
                        c.optim.min_lr, c.optim.lr);
  TANDEM_CONFIG_REQUIRE(c.run.output_dir.size() > 0, "run.output_dir", "must not be empty");
  // Steps after train.steps are allowed (a shortened run of a job that traces a later step) and
  // simply never traced; the trainer says so at start.
  for (int64_t step : c.logging.trace_steps) {
    TANDEM_CONFIG_REQUIRE(step >= 1, "logging.trace_steps", "step {} is not an optimizer step (they count from 1)",
                          step);
  }
}

// train.cuda_graph records a micro-batch's forward and backward once and replays it, so that work
// may not talk to the host or to other ranks (launch/train/graphed_step.h): the layouts whose
// forward and backward hold no collective, and no host-side token counts.
void check_cuda_graph(const JobConfig& c) {
  if (!c.train.cuda_graph) return;
  TANDEM_CONFIG_REQUIRE(c.run.device != runtime::DeviceKind::kCpu, "train.cuda_graph",
                        "CUDA graphs need a GPU, but run.device is cpu; set train.cuda_graph: false");
  TANDEM_CONFIG_REQUIRE(!uses_pipeline(c), "train.cuda_graph",
                        "CUDA graphs do not drive pipelines yet (pp = {}, schedule {}); use pp = 1 or "
                        "train.cuda_graph: false",
                        c.parallel.pp, config::enum_name(c.parallel.pipeline.schedule));
  TANDEM_CONFIG_REQUIRE(c.parallel.tp == 1 && c.parallel.ep == 1, "train.cuda_graph",
                        "CUDA graphs cannot record the tensor- or expert-parallel collectives of forward and backward "
                        "(tp = {}, ep = {}); use tp = ep = 1 or train.cuda_graph: false",
                        c.parallel.tp, c.parallel.ep);
  TANDEM_CONFIG_REQUIRE(c.parallel.zero <= 1, "train.cuda_graph",
                        "CUDA graphs need the gradients in fixed buffers: ZeRO {} frees and gathers them during "
                        "backward; use parallel.zero 0 or 1",
                        c.parallel.zero);
  TANDEM_CONFIG_REQUIRE(c.model.capacity_factor <= 0, "train.cuda_graph",
                        "token dropping (model.capacity_factor = {}) counts tokens on the host, which a CUDA graph "
                        "cannot; set capacity_factor: 0",
                        c.model.capacity_factor);
  TANDEM_CONFIG_REQUIRE(c.train.precision != Precision::kFp32 || c.model.n_routed_experts == 0, "train.cuda_graph",
                        "the routed experts' fp32 grouped GEMMs read the expert boundaries on the host, which a CUDA "
                        "graph cannot; use train.precision bf16 (or auto) for an MoE model");
}

}  // namespace

void JobConfig::resolve_and_validate(int64_t world_size) {
  model.validate();
  // Layout: world = pp * dp * tp, ep divides dp * tp, order is a permutation; dp 0 is derived.
  parallel.dp =
      parallel::GridLayout::create(world_size, parallel.pp, parallel.dp, parallel.tp, parallel.ep, parallel.order)
          .dp_size();
  check_tensor_parallel(*this);
  check_expert_parallel(*this);
  parallel.pipeline.micro_batches = resolve_micro_batches(*this);
  check_pipeline(*this);
  check_run(*this);
  check_cuda_graph(*this);
}

int pipeline_chunks(const parallel::PipelineConfig& pipeline) {
  return pipeline.schedule == schedule::ScheduleKind::kInterleaved ? static_cast<int>(pipeline.virtual_stages)
                                                                   : schedule::default_num_chunks(pipeline.schedule);
}

bool uses_pipeline(const JobConfig& config) {
  return config.parallel.pp > 1 || pipeline_chunks(config.parallel.pipeline) > 1;
}

runtime::DeviceKind resolve_device(runtime::DeviceKind wanted, bool gpu_usable) {
  if (wanted == runtime::DeviceKind::kAuto) return gpu_usable ? runtime::DeviceKind::kCuda : runtime::DeviceKind::kCpu;
  return wanted;
}

Precision resolve_precision(Precision wanted, runtime::DeviceKind device) {
  TANDEM_CHECK(device != runtime::DeviceKind::kAuto, "resolve_precision needs a resolved device (resolve_device)");
  if (wanted != Precision::kAuto) return wanted;
  // bf16 on the CPU stays possible when asked for (CPU autocast): slow, but it lets CI exercise
  // the mixed-precision path.
  return device == runtime::DeviceKind::kCuda ? Precision::kBf16 : Precision::kFp32;
}

}  // namespace tandem::launch
