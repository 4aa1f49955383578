// Stage::Impl: the modules one pipeline stage holds and its forward. Model::make_stages builds
// several Impls over the same module objects (sharing parameters), Stage::build fresh ones.
#pragma once

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "model/detail/decoder.h"
#include "model/detail/kv_cache.h"
#include "model/stage.h"
#include "parallel/layer_hooks.h"

namespace tandem::model {

struct Stage::Impl {
  ModelConfig config;
  StageSpec spec;
  mutable std::mutex rope_mutex;                       // guards rope_cache
  mutable std::vector<detail::RopeTables> rope_cache;  // one per (dtype, device)
  ParallelGroups groups;
  std::shared_ptr<WeightGradQueue> queue = std::make_shared<WeightGradQueue>();
  parallel::OverlapHookPtr overlap;                                  // see Stage::set_overlap_hook
  std::shared_ptr<parallel::LayerHooks> layer_hooks;                 // null: none (see Stage::set_layer_hooks)
  std::shared_ptr<const Objective> objective = default_objective();  // see Stage::set_objective
  RecomputePolicy recompute;                                         // see Stage::set_recompute

  detail::TokenEmbedding embed{nullptr};     // stage 0; a copy on the last stage when it needs one
  std::vector<detail::DecoderLayer> layers;  // global indices spec.layer_begin ..
  detail::RMSNorm norm{nullptr};             // last stage
  detail::SplitLinear head{nullptr};         // last stage, null when tied
  std::vector<detail::MtpModule> mtp;        // last stage, depths 1..D
  // Registers every module above, so train()/to() reach them all (names here are internal).
  std::shared_ptr<torch::nn::Module> root = std::make_shared<torch::nn::Module>("Stage");

  // Creates the modules of `spec` (uninitialized) and registers them on root.
  void create_modules();
  // Fills every parameter from (seed, HF name, full shape); norms start at 1.
  void initialize(uint64_t seed);
  // Registers the existing module pointers on root (after they were set from outside).
  void register_on_root();

  bool needs_embedding() const;
  bool sequence_parallel() const { return groups.sequence_parallel && groups.tp_size() > 1; }
  int64_t vocab_start() const { return groups.tp_rank() * (config.vocab_size / groups.tp_size()); }
  const at::Tensor& head_weight() const { return head ? head->weight : embed->weight; }
  // Rotary tables of at least `length` positions. Built once per dtype and device (for the
  // longest length asked so far) and then reused: building them copies from the host, which would
  // make every forward wait for the GPU. Thread-safe (DualPipe runs two forwards at once).
  detail::RopeTables rope_tables(int64_t length, at::ScalarType dtype, at::Device device) const;
  // MoE layers of this stage (main layers, then MTP blocks) with their global layer index.
  std::vector<std::pair<int64_t, detail::MoE>> moe_layers() const;

  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  std::vector<parallel::ShardedParam> sharded_parameters() const;
  std::vector<std::pair<std::string, at::Tensor>> named_buffers() const;

  StageOutput forward(const StageInput& input);
  // The last stage's part of forward: final norm, MTP modules, the head over all their rows, and
  // the objective's losses. h [B, T(/tp), C] is the last decoder layer's output.
  LossPieces head_losses(const at::Tensor& h, const at::Tensor& tokens, detail::ForwardContext& ctx,
                         std::shared_ptr<const ResponseTokens> responses = nullptr);
  // [B, T] -> [B, T, V/tp] (this rank's vocabulary columns); stage spanning the model only.
  at::Tensor main_logits(const at::Tensor& tokens, const PackedRows& packing = {});
  // Decoding (no gradients): the next n tokens of every row [B, n] at `positions` [B, n], seeing
  // the keys `attn_mask` [B, 1, n, cache.length + n] allows; appends them to `cache` and returns
  // the logits of each row's last position [B, V/tp]. Stage spanning the model only.
  at::Tensor decode_logits(const at::Tensor& tokens, const at::Tensor& positions, const at::Tensor& attn_mask,
                           detail::KvCache& cache);
  // Sets ctx.positions and ctx.attn_mask for packed rows of T input tokens (no-op when undefined).
  void apply_packing(const PackedRows& packing, int64_t batch, int64_t t, detail::ForwardContext& ctx) const;
  // Queue and parallel groups of a forward; the caller adds the rotary tables and loss scale.
  detail::ForwardContext make_context() const;
  // One decoder layer's forward between its layer hooks; `position` is its index within the
  // stage (whether full recomputation covers it).
  at::Tensor run_layer(detail::DecoderLayer& layer, int64_t position, const at::Tensor& input,
                       detail::ForwardContext& ctx);
  // The hook calls around a layer's forward: begin_layer before it returns the tensors to feed
  // the layer in place of `inputs` (aliases carrying the after_backward hook, which fires once the
  // gradients of all of them are complete), end_layer after it with the layer's outputs.
  std::vector<at::Tensor> begin_layer(int64_t layer, const std::vector<at::Tensor>& inputs);
  void end_layer(int64_t layer, const std::vector<at::Tensor>& outputs);
};

}  // namespace tandem::model
