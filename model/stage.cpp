// Stage: construction, HF naming, forward (embedding -> layers -> norm/head/MTP losses),
// externally driven backward with the B/W split, expert load and routing-bias update.
// The head runs once on the main and all MTP hidden states stacked along rows, so the head
// weight is used once per backward (its gradient accumulation order never depends on the
// B/W split) and the head matmul is one large GEMM. The MTP modules look the embedding up
// themselves (the last stage may hold only a copy of it).
// Tensor parallelism: the head is vocab-parallel (logits [rows, V/tp], vocab-parallel
// cross-entropy); under sequence parallelism the main rows are all-gathered before the head and
// the MTP modules run on the gathered (replicated) hidden states without sequence parallelism.
#include <fmt/format.h>

#include <algorithm>

#include "model/detail/recompute.h"
#include "model/detail/stage_impl.h"
#include "model/init.h"
#include "model/sharding.h"
#include "parallel/tp_mappings.h"
#include "parallel/vocab_parallel.h"
#include "runtime/error.h"

namespace tandem::model {

using detail::DecoderLayer;
using detail::MtpModule;

// --- Impl -----------------------------------------------------------------------------------

bool stage_holds_embedding(const ModelConfig& config, const StageSpec& spec) {
  return spec.is_first() || (spec.is_last() && (config.tie_word_embeddings || config.num_nextn_predict_layers > 0));
}

bool Stage::Impl::needs_embedding() const { return stage_holds_embedding(config, spec); }

void Stage::Impl::create_modules() {
  const ModelConfig& c = config;
  const int64_t tp = groups.tp_size();
  if (needs_embedding()) embed = detail::TokenEmbedding(c.vocab_size, c.hidden_size, tp, groups.tp_rank());
  for (int64_t layer = spec.layer_begin; layer < spec.layer_end; ++layer) layers.emplace_back(c, layer, groups);
  if (spec.is_last()) {
    norm = detail::RMSNorm(c.hidden_size, c.rms_norm_eps);
    if (!c.tie_word_embeddings) head = detail::SplitLinear(c.hidden_size, c.vocab_size / tp);
    for (int64_t depth = 1; depth <= c.num_nextn_predict_layers; ++depth) mtp.emplace_back(c, depth, groups);
  }
  register_on_root();
}

void Stage::Impl::register_on_root() {
  if (embed) root->register_module("embed", embed);
  for (const DecoderLayer& layer : layers) root->register_module(fmt::format("layer{}", layer->layer_index()), layer);
  if (norm) root->register_module("norm", norm);
  if (head) root->register_module("head", head);
  for (const MtpModule& m : mtp) root->register_module(fmt::format("mtp{}", m->depth()), m);
}

void Stage::Impl::initialize(uint64_t seed) {
  torch::NoGradGuard no_grad;
  for (auto& [param, sharding] : sharded_parameters()) {
    if (is_norm_weight(sharding.name)) {
      param.fill_(1.0);
    } else {
      // The full tensor, whatever the layout, then this rank's slice of it.
      param.copy_(sharding.slice_of(init_normal(seed, sharding.name, sharding.global_shape, config.initializer_range)));
    }
  }
}

std::vector<parallel::ShardedParam> Stage::Impl::sharded_parameters() const {
  std::vector<parallel::ShardedParam> out;
  for (auto& [name, param] : named_parameters()) {
    out.push_back({param, param_sharding_from_local(name, param.sizes().vec(), config, groups)});
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Stage::Impl::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add_module = [&](const std::string& prefix, const torch::nn::Module& m) {
    for (const auto& item : m.named_parameters(/*recurse=*/true)) out.emplace_back(prefix + item.key(), item.value());
  };
  if (embed) out.emplace_back("model.embed_tokens.weight", embed->weight);
  for (const DecoderLayer& layer : layers) add_module(fmt::format("model.layers.{}.", layer->layer_index()), *layer);
  if (norm) out.emplace_back("model.norm.weight", norm->weight);
  if (head) out.emplace_back("lm_head.weight", head->weight);
  for (const MtpModule& m : mtp) add_module(fmt::format("model.layers.{}.", m->block->layer_index()), *m);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Stage::Impl::named_buffers() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [layer, moe] : moe_layers()) {
    out.emplace_back(fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", layer),
                     moe->gate->e_score_correction_bias);
  }
  return out;
}

std::vector<std::pair<int64_t, detail::MoE>> Stage::Impl::moe_layers() const {
  std::vector<std::pair<int64_t, detail::MoE>> out;
  for (const DecoderLayer& layer : layers) {
    if (layer->moe) out.emplace_back(layer->layer_index(), layer->moe);
  }
  for (const MtpModule& m : mtp) {
    if (m->block->moe) out.emplace_back(m->block->layer_index(), m->block->moe);
  }
  return out;
}

detail::ForwardContext Stage::Impl::make_context() const {
  detail::ForwardContext ctx;
  ctx.queue = queue;
  ctx.overlap = overlap;
  if (groups.tp_size() > 1) ctx.tp = groups.tp;
  if (groups.ep_size() > 1) ctx.ep = groups.ep;
  ctx.sequence_parallel = sequence_parallel();
  ctx.recompute_attention_inputs = recompute.selective();
  return ctx;
}

detail::RopeTables Stage::Impl::rope_tables(int64_t length, at::ScalarType dtype, at::Device device) const {
  const std::lock_guard lock(rope_mutex);
  auto same_kind = [&](const detail::RopeTables& t) {
    return t.cos.scalar_type() == dtype && t.cos.device() == device;
  };
  auto cached = std::find_if(rope_cache.begin(), rope_cache.end(), same_kind);
  if (cached != rope_cache.end() && cached->cos.size(0) >= length) return *cached;  // layers narrow to T
  const int64_t rope_dim = config.uses_gqa() ? config.gqa_head_dim() : config.qk_rope_head_dim;
  detail::RopeTables tables = detail::make_rope_tables(config, rope_dim, length, dtype, device);
  if (cached != rope_cache.end()) {
    *cached = tables;
  } else {
    rope_cache.push_back(tables);
  }
  return tables;
}

StageOutput Stage::Impl::forward(const StageInput& input) {
  const at::Tensor& tokens = input.tokens;  // [B, T+1]
  TANDEM_CHECK_INPUT(tokens.defined() && tokens.dim() == 2 && tokens.scalar_type() == at::kLong,
                     "stage {} needs token ids [B, T+1] int64", spec.index);
  const int64_t b = tokens.size(0);
  const int64_t t = tokens.size(1) - 1;
  const int64_t depth = config.num_nextn_predict_layers;
  TANDEM_CHECK_INPUT(t > depth, "sequence of {} tokens is too short for {} MTP depths (needs T > D)", t, depth);
  const int64_t tp = groups.tp_size();
  const bool sp = sequence_parallel();
  TANDEM_CHECK_INPUT(!sp || t % tp == 0,
                     "with sequence parallelism the sequence length {} must be divisible by tp = {}", t, tp);
  const int64_t t_local = sp ? t / tp : t;

  detail::ForwardContext ctx = make_context();
  ctx.loss_scale = input.loss_scale;
  apply_packing(input.packing, b, t, ctx);
  at::Tensor h;  // [B, T(/tp), C]
  if (spec.is_first()) {
    h = embed->forward(tokens.narrow(1, 0, t), ctx, sp);
  } else {
    h = input.hidden;
    TANDEM_CHECK_INPUT(
        h.defined() && h.dim() == 3 && h.size(0) == b && h.size(1) == t_local && h.size(2) == config.hidden_size,
        "stage {} expects hidden [{}, {}, {}] from the previous stage", spec.index, b, t_local, config.hidden_size);
  }
  ctx.rope = rope_tables(t, h.scalar_type(), h.device());
  for (size_t i = 0; i < layers.size(); ++i) h = run_layer(layers[i], static_cast<int64_t>(i), h, ctx);

  StageOutput out;
  if (!spec.is_last()) {
    out.hidden = h;
    out.aux_loss = ctx.aux_loss.defined() ? ctx.aux_loss : at::zeros({}, h.options());
    return out;
  }
  out.losses = head_losses(h, tokens, ctx, input.responses);
  out.aux_loss = out.losses.aux_loss;
  return out;
}

LossPieces Stage::Impl::head_losses(const at::Tensor& h, const at::Tensor& tokens, detail::ForwardContext& ctx,
                                    std::shared_ptr<const ResponseTokens> responses) {
  const int64_t b = tokens.size(0);
  const int64_t t = tokens.size(1) - 1;
  const bool sp = ctx.sequence_parallel;
  // Main head input, then MTP depth k on positions [0, T-k) predicting tokens[:, k+1 ..]. Head
  // inputs enter the tensor-parallel region (the head is column-parallel over the vocabulary).
  std::vector<at::Tensor> head_rows{detail::enter_tp_region(norm->forward(h), ctx).reshape({b * t, -1})};  // [B*T, C]
  std::vector<at::Tensor> targets{tokens.narrow(1, 1, t).reshape({-1})};                                   // [B*T]
  // MTP modules run on the full, replicated sequence (T-k is rarely divisible by tp).
  at::Tensor prev = sp ? parallel::gather_to_replicated(h, ctx.tp, 1) : h;  // [B, T, C]
  ctx.sequence_parallel = false;
  const at::Tensor positions = ctx.positions, mask = ctx.attn_mask;  // packed rows: narrowed per depth
  for (MtpModule& m : mtp) {
    const int64_t k = m->depth();
    const int64_t len = t - k;
    if (positions.defined()) {
      ctx.positions = positions.narrow(1, 0, len);
      ctx.attn_mask = mask.narrow(2, 0, len).narrow(3, 0, len);
    }
    const at::Tensor ids = tokens.narrow(1, k, len);
    const at::Tensor emb = embed->forward(ids, ctx, false);  // [B, T-k, C] Emb(t_{i+k})
    const int64_t layer = m->block->layer_index();
    const std::vector<at::Tensor> fed = begin_layer(layer, {prev.narrow(1, 0, len), emb});
    const at::Tensor hk = m->forward(fed[0], fed[1], ctx);  // [B, T-k, C]
    const at::Tensor head_in = m->head_input(hk);           // [B, T-k, C]
    end_layer(layer, {hk, head_in});
    head_rows.push_back(detail::enter_tp_region(head_in, ctx).reshape({b * len, -1}));
    targets.push_back(tokens.narrow(1, k + 1, len).reshape({-1}));
    prev = hk;
  }
  // A tied head's weight is also the embedding, whose gradient sums several lookups in B;
  // deferring the head's share would change that summation order, so it is computed in B too.
  const std::shared_ptr<WeightGradQueue> head_queue = head ? queue : nullptr;
  HeadOutput head;
  head.logits = detail::split_linear(at::cat(head_rows, 0), head_weight(), head_queue);  // [rows, V/tp]
  head.targets = std::move(targets);
  head.aux_loss = ctx.aux_loss;
  head.vocab_start = vocab_start();
  head.tp = ctx.tp;
  head.responses = std::move(responses);
  return objective->losses(config, head);
}

at::Tensor Stage::Impl::main_logits(const at::Tensor& tokens, const PackedRows& packing) {
  TANDEM_CHECK(spec.is_first() && spec.is_last(), "main_logits needs the stage spanning the whole model");
  TANDEM_CHECK_INPUT(tokens.dim() == 2 && tokens.scalar_type() == at::kLong, "tokens must be [B, T] int64");
  const int64_t t = tokens.size(1);
  TANDEM_CHECK_INPUT(!sequence_parallel() || t % groups.tp_size() == 0,
                     "with sequence parallelism the sequence length {} must be divisible by tp = {}", t,
                     groups.tp_size());
  detail::ForwardContext ctx = make_context();
  apply_packing(packing, tokens.size(0), t, ctx);
  at::Tensor h = embed->forward(tokens, ctx, ctx.sequence_parallel);
  ctx.rope = rope_tables(t, h.scalar_type(), h.device());
  for (size_t i = 0; i < layers.size(); ++i)
    h = run_layer(layers[i], static_cast<int64_t>(i), h, ctx);                                        // [B, T(/tp), C]
  return detail::split_linear(detail::enter_tp_region(norm->forward(h), ctx), head_weight(), queue);  // [B, T, V/tp]
}

at::Tensor Stage::Impl::decode_logits(const at::Tensor& tokens, const at::Tensor& positions,
                                      const at::Tensor& attn_mask, detail::KvCache& cache) {
  TANDEM_CHECK(spec.is_first() && spec.is_last(), "decoding needs the stage spanning the whole model");
  const int64_t n = tokens.size(1);
  TANDEM_CHECK_INPUT(tokens.dim() == 2 && positions.sizes() == tokens.sizes() && attn_mask.dim() == 4 &&
                         attn_mask.size(2) == n && attn_mask.size(3) == cache.length + n,
                     "decode: tokens [B, n], positions [B, n] and mask [B, 1, n, {}] expected", cache.length + n);
  const torch::NoGradGuard no_grad;
  detail::ForwardContext ctx = make_context();
  ctx.sequence_parallel = false;  // a step is often one token: nothing to split along the sequence
  ctx.positions = positions;
  ctx.attn_mask = attn_mask;
  ctx.kv_cache = &cache;
  at::Tensor h = embed->forward(tokens, ctx, false);  // [B, n, C]
  ctx.rope = rope_tables(cache.capacity, h.scalar_type(), h.device());
  for (DecoderLayer& layer : layers) {
    const int64_t index = layer->layer_index();
    h = layer->forward(begin_layer(index, {h})[0], ctx);
    end_layer(index, {h});
  }
  cache.length += n;
  const at::Tensor last = norm->forward(h.select(1, n - 1));  // [B, C]
  return detail::split_linear(last, head_weight(), nullptr);  // [B, V/tp]
}

void Stage::Impl::apply_packing(const PackedRows& packing, int64_t batch, int64_t t,
                                detail::ForwardContext& ctx) const {
  if (!packing.defined()) return;
  const at::Tensor& segments = packing.segment_ids;
  TANDEM_CHECK_INPUT(segments.dim() == 2 && segments.size(0) == batch && segments.size(1) == t &&
                         packing.positions.defined() && packing.positions.sizes() == segments.sizes(),
                     "packed rows need segment_ids and positions [{}, {}]", batch, t);
  ctx.positions = packing.positions.to(at::kLong);
  ctx.attn_mask = packed_causal_mask(segments);
}

at::Tensor packed_causal_mask(const at::Tensor& segment_ids) {
  const int64_t t = segment_ids.size(1);
  const at::Tensor same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1);  // [B, T, T]
  const at::Tensor causal = at::ones({t, t}, segment_ids.options().dtype(at::kBool)).tril();
  return (same & causal).unsqueeze(1);  // [B, 1, T, T]
}

at::Tensor Stage::Impl::run_layer(DecoderLayer& layer, int64_t position, const at::Tensor& input,
                                  detail::ForwardContext& ctx) {
  const int64_t index = layer->layer_index();
  const at::Tensor fed = begin_layer(index, {input})[0];
  at::Tensor output;
  if (recompute.recomputes_whole_layer(position)) {
    // Full recomputation: only `fed` stays alive until backward, where the layer runs again
    // (inside the layer hooks: ZeRO-3 has gathered the parameters for its backward by then).
    output = detail::run_recomputed_in_backward(
        [layer](const std::vector<at::Tensor>& in, detail::ForwardContext& c) mutable {
          return std::vector<at::Tensor>{layer->forward(in[0], c)};
        },
        {fed}, ctx)[0];
  } else {
    output = layer->forward(fed, ctx);
  }
  end_layer(index, {output});
  return output;
}

std::vector<at::Tensor> Stage::Impl::begin_layer(int64_t layer, const std::vector<at::Tensor>& inputs) {
  if (!layer_hooks) return inputs;
  layer_hooks->before_forward(layer);
  // Each input that carries a gradient is fed through a fresh alias holding the hook: its
  // gradient is complete exactly when the layer's backward has produced it, the hook goes with
  // this graph (never onto a caller's leaf), and it fires before the hooks other layers put on
  // the input tensor itself (later nodes run first), so this layer is released before the
  // previous one is prefetched.
  std::vector<at::Tensor> fed = inputs;
  auto remaining = std::make_shared<int64_t>(0);
  for (at::Tensor& input : fed) {
    if (!input.defined() || !input.requires_grad()) continue;
    input = input.view_as(input);
    ++*remaining;
    input.register_hook([hooks = layer_hooks, layer, remaining](const at::TensorBase&) {
      if (--*remaining == 0) hooks->after_backward(layer);
    });
  }
  return fed;
}

void Stage::Impl::end_layer(int64_t layer, const std::vector<at::Tensor>& outputs) {
  if (!layer_hooks) return;
  layer_hooks->after_forward(layer);
  for (const at::Tensor& output : outputs) {
    if (!output.requires_grad()) continue;
    output.register_hook([hooks = layer_hooks, layer](const at::TensorBase&) { hooks->before_backward(layer); });
  }
}

// --- Stage ----------------------------------------------------------------------------------

namespace {

// Every split must be even: heads, kv heads (gqa), MLP and shared-expert widths and the
// vocabulary over tp, routed experts over ep (launch/config/job_config.cpp checks the same up front).
void check_supported_groups(const ModelConfig& c, const ParallelGroups& groups) {
  const int64_t tp = groups.tp_size();
  const int64_t ep = groups.ep_size();
  TANDEM_CONFIG_REQUIRE(c.num_attention_heads % tp == 0, "parallel.tp",
                        "model.num_attention_heads = {} is not divisible by tp = {}", c.num_attention_heads, tp);
  TANDEM_CONFIG_REQUIRE(!c.uses_gqa() || c.num_key_value_heads % tp == 0, "parallel.tp",
                        "model.num_key_value_heads = {} is not divisible by tp = {}", c.num_key_value_heads, tp);
  TANDEM_CONFIG_REQUIRE(c.intermediate_size % tp == 0, "parallel.tp",
                        "model.intermediate_size = {} is not divisible by tp = {}", c.intermediate_size, tp);
  TANDEM_CONFIG_REQUIRE(c.vocab_size % tp == 0, "parallel.tp", "model.vocab_size = {} is not divisible by tp = {}",
                        c.vocab_size, tp);
  TANDEM_CONFIG_REQUIRE(c.n_routed_experts == 0 || (c.n_shared_experts * c.moe_intermediate_size) % tp == 0,
                        "parallel.tp",
                        "the shared experts' width n_shared_experts * moe_intermediate_size = {} * {} is not "
                        "divisible by tp = {}",
                        c.n_shared_experts, c.moe_intermediate_size, tp);
  TANDEM_CONFIG_REQUIRE(ep == 1 || c.n_routed_experts > 0, "parallel.ep",
                        "ep = {} needs an MoE model (model.n_routed_experts is 0)", ep);
  TANDEM_CONFIG_REQUIRE(c.n_routed_experts % ep == 0, "parallel.ep",
                        "model.n_routed_experts = {} is not divisible by ep = {}", c.n_routed_experts, ep);
}

}  // namespace

std::shared_ptr<Stage> Stage::build(const ModelConfig& config, uint64_t seed, const ParallelGroups& groups,
                                    const StageSpec& spec) {
  config.validate();
  check_supported_groups(config, groups);
  TANDEM_CHECK(spec.num_stages >= 1 && spec.index >= 0 && spec.index < spec.num_stages && spec.layer_begin >= 0 &&
                   spec.layer_begin <= spec.layer_end && spec.layer_end <= config.num_hidden_layers,
               "bad stage spec: stage {} of {}, layers [{}, {})", spec.index, spec.num_stages, spec.layer_begin,
               spec.layer_end);
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->spec = spec;
  impl->groups = groups;
  impl->create_modules();
  impl->initialize(seed);
  return std::make_shared<Stage>(std::move(impl));
}

Stage::Stage(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Stage::~Stage() = default;

const StageSpec& Stage::spec() const { return impl_->spec; }
const ModelConfig& Stage::config() const { return impl_->config; }

StageOutput Stage::forward(const StageInput& input) { return impl_->forward(input); }

std::vector<int64_t> Stage::hidden_shape(const at::Tensor& tokens) const {
  const int64_t t = tokens.size(1) - 1;
  return {tokens.size(0), impl_->sequence_parallel() ? t / impl_->groups.tp_size() : t, impl_->config.hidden_size};
}

void Stage::backward(const std::vector<at::Tensor>& outputs, const std::vector<at::Tensor>& grad_outputs,
                     bool defer_weight_grads) {
  WeightGradQueue& queue = *impl_->queue;
  const bool previous = queue.deferring();
  queue.set_deferring(defer_weight_grads);
  try {
    torch::autograd::backward(outputs, grad_outputs);
  } catch (...) {
    queue.set_deferring(previous);
    queue.close_group();
    throw;
  }
  queue.set_deferring(previous);
  queue.close_group();
}

const std::shared_ptr<WeightGradQueue>& Stage::weight_grad_queue() const { return impl_->queue; }

void Stage::set_layer_hooks(std::shared_ptr<parallel::LayerHooks> hooks) { impl_->layer_hooks = std::move(hooks); }

void Stage::set_weight_grad_queue(std::shared_ptr<WeightGradQueue> queue) {
  TANDEM_CHECK(queue != nullptr, "a stage needs a weight-gradient queue");
  impl_->queue = std::move(queue);
}

void Stage::set_overlap_hook(parallel::OverlapHookPtr hook) { impl_->overlap = std::move(hook); }

void Stage::set_recompute(const RecomputePolicy& policy) {
  TANDEM_CHECK(policy.layers >= 0, "recompute layers must be >= 0, got {}", policy.layers);
  impl_->recompute = policy;
}

void Stage::set_objective(std::shared_ptr<const Objective> objective) {
  TANDEM_CHECK(objective != nullptr, "a stage needs an objective");
  impl_->objective = std::move(objective);
}

std::vector<std::pair<std::string, at::Tensor>> Stage::named_parameters() const { return impl_->named_parameters(); }
std::vector<parallel::ShardedParam> Stage::sharded_parameters() const { return impl_->sharded_parameters(); }
std::vector<std::pair<std::string, at::Tensor>> Stage::named_buffers() const { return impl_->named_buffers(); }

double load_imbalance(const at::Tensor& counts) {
  double sum = 0;
  int64_t layers = 0;
  const at::Tensor as_double = counts.to(at::kDouble);
  for (int64_t layer = 0; layer < as_double.size(0); ++layer) {
    const at::Tensor row = as_double[layer];
    const double mean = row.mean().item<double>();
    if (mean <= 0) continue;
    sum += row.max().item<double>() / mean;
    ++layers;
  }
  return layers > 0 ? sum / static_cast<double>(layers) : 1.0;
}

at::Tensor Stage::expert_load() const {
  const ModelConfig& c = impl_->config;
  at::Tensor load = at::zeros({c.num_hidden_layers + c.num_nextn_predict_layers, c.n_routed_experts}, at::kLong);
  for (auto& [layer, moe] : impl_->moe_layers()) load[layer].copy_(moe->load());
  return load;
}

void Stage::reset_expert_load() {
  for (auto& [layer, moe] : impl_->moe_layers()) moe->reset_load();
}

void Stage::update_routing_bias(const at::Tensor& counts, double gamma) {
  const ModelConfig& c = impl_->config;
  TANDEM_CHECK(counts.dim() == 2 && counts.size(0) == c.num_hidden_layers + c.num_nextn_predict_layers &&
                   counts.size(1) == c.n_routed_experts,
               "routing counts must be [{}, {}], got {}", c.num_hidden_layers + c.num_nextn_predict_layers,
               c.n_routed_experts, c10::str(counts.sizes()));
  const double step = gamma < 0 ? c.bias_update_speed : gamma;
  for (auto& [layer, moe] : impl_->moe_layers()) {
    detail::update_routing_bias_(moe->gate->e_score_correction_bias, counts[layer], step);
  }
}

void Stage::train(bool on) { impl_->root->train(on); }

void Stage::to(const at::Device& device) {
  impl_->root->to(device);
  for (auto& [layer, moe] : impl_->moe_layers()) moe->move_load_to(device);
}
void Stage::to(at::ScalarType dtype) {
  impl_->root->to(dtype);
  // The routing bias moves by gamma = 1e-3 per step: it stays in at least fp32 (as in V3).
  const at::ScalarType bias_dtype = at::promote_types(dtype, at::kFloat);
  torch::NoGradGuard no_grad;
  for (auto& [layer, moe] : impl_->moe_layers()) {
    at::Tensor& bias = moe->gate->e_score_correction_bias;
    bias.set_data(bias.to(bias_dtype));
  }
}

}  // namespace tandem::model
