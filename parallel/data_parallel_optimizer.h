// DataParallelOptimizer: data parallelism for one rank's parameters (a stage's
// sharded_parameters()): bucketed gradient reduction overlapped with backward, ZeRO 0-3, the
// global gradient norm, AdamW, checkpoint state by global name and a memory report. Gradients
// are reduced as param_sharding.h says, over dp, dp*tp (partial over tp) or expert-dp: those
// communicators must carry nothing else during backward. One step, on every rank in this order:
//   opt.zero_grad();
//   for m in [0, M): opt.begin_backward(/*final_backward=*/m == M - 1); forward; backward;
//                    opt.end_backward();      // hooks launched full buckets during backward
//   opt.finish_gradient_sync();               // waits; ZeRO >= 1: this rank's slice is final
//   opt.step(lr, clip_scale(opt.global_grad_norm(), max_norm));
// Without begin/end_backward, finish_gradient_sync() reduces everything (no overlap). Not
// thread-safe: gradient hooks run on the autograd engine's thread during backward.
// Why: docs/DESIGN.md#gradient-synchronisation-and-zero
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/bucketed_group.h"
#include "parallel/communicator.h"
#include "parallel/layer_hooks.h"
#include "parallel/param_sharding.h"

namespace tandem::parallel {

class ProcessGrid;

// Communicators of this rank's groups (null = a group of size 1).
struct DataParallelGroups {
  CommunicatorPtr tp;
  CommunicatorPtr dp;
  CommunicatorPtr edp;    // expert data parallel: ranks holding the same experts
  CommunicatorPtr dp_tp;  // needed when tp > 1 and dp > 1 and some gradient is partial over tp
  CommunicatorPtr world;  // every rank holding part of the model: the gradient norm sums over it
  static DataParallelGroups from_grid(const ProcessGrid& grid);
};

struct DataParallelOptions {
  int64_t zero_stage = 0;   // parallel.zero
  double bucket_mb = 25.0;  // parallel.grad_bucket_mb (of fp32 gradients)
  AdamWConfig adamw;
  at::ScalarType reduce_dtype = at::kFloat;  // dtype gradients travel in (memory stays fp32)
  // Whether AdamW's weight decay applies to a parameter; null: tensors of two or more dimensions
  // (norm weights and biases are 1-D).
  std::function<bool(const std::string& name)> decays;
  // ZeRO-3's unit of gathering; null: i for "model.layers.{i}.*", -1 (always gathered) otherwise.
  std::function<int64_t(const std::string& name)> layer_of;
  // counted[i] false: params[i] is a copy of a parameter that another tensor stands for (a
  // pipeline's second copy of a stage, the last stage's copy of the embedding), trained like
  // the others but left out of the gradient norm and of visit_owned, so that each global
  // parameter counts once. Empty: every parameter counts.
  std::vector<bool> counted;
};

// Evidence of overlap for the last backward (tests, logs).
struct GradSyncStats {
  int64_t num_buckets = 0;
  int64_t launched_in_backward = 0;  // buckets launched from gradient hooks, before end_backward
  // Gradients of this optimizer still to come when the first bucket launched (> 0: the
  // reduction started while backward was still producing gradients); -1 if none launched early.
  int64_t grads_pending_at_first_launch = -1;
};

class DataParallelOptimizer {
 public:
  // Takes over the parameters' storage (values kept) and installs gradient hooks on them. No
  // communication. Parameters: float32 leaves on one device, each passed once; every rank of a
  // group passes the same list (names, shapes, order) and runs the same graph (as DDP/FSDP
  // require). Throws tandem::Error (kConfig for bad options or missing groups).
  DataParallelOptimizer(const std::vector<ShardedParam>& params, DataParallelGroups groups,
                        DataParallelOptions options);
  ~DataParallelOptimizer();  // removes the hooks; layer_hooks() become no-ops
  DataParallelOptimizer(const DataParallelOptimizer&) = delete;
  DataParallelOptimizer& operator=(const DataParallelOptimizer&) = delete;

  // --- one step (see the file comment for the order) ----------------------------------------
  void zero_grad();
  // `final_backward`: after this backward every gradient is final for the step (ZeRO 0/1 reduce
  // then; ZeRO 2/3 reduce after every backward). `weight_grads_deferred`: this backward leaves
  // weight gradients to a W queue, so the hooks mark nothing; call mark_ready(param) as each
  // becomes final (after its W), or just end_backward() after the last W.
  void begin_backward(bool final_backward, bool weight_grads_deferred = false);
  void mark_ready(const at::Tensor& param);  // this parameter's gradient is final for this backward
  // Ends the backward begun by begin_backward: launches what is left (ZeRO 2/3: and completes it).
  void end_backward();
  // Waits for every reduction; then the gradients follow the contract (ZeRO >= 1: this rank's
  // slice of them).
  void finish_gradient_sync();
  // sqrt of the sum of squares of every gradient element of the global model, each counted once:
  // ZeRO shards summed over their group, tp slices summed, tp-replicated weights counted on tp
  // rank 0, experts over ep, stages over pp. Collective over `world`. After finish_gradient_sync.
  double global_grad_norm();
  // AdamW with gradients scaled by `clip_scale` (clip_scale(norm, max_norm)), then the full
  // parameters gathered back where the stage keeps them (collective over each group).
  void step(double lr, double clip_scale = 1.0);
  int64_t step_count() const;
  void set_step_count(int64_t steps);  // checkpoint resume

  // ZeRO-3's layer callbacks (no-ops under other stages; valid after the optimizer is gone).
  // Under ZeRO-3 give them to every stage (model::Stage::set_layer_hooks) BEFORE the first
  // forward: a decoder layer's parameters are gathered only around its forward and its backward,
  // and a forward without the hooks reads released memory.
  std::shared_ptr<LayerHooks> layer_hooks() const;

  // --- checkpoint state ----------------------------------------------------------------------
  // Calls `visit` for every parameter with its parameter value and AdamW moments: the rank-local
  // tensor (this rank's tp/ep shard, local_shape) or, with `global_shape`, the whole tensor
  // (tensor-parallel slices all-gathered over tp; experts stay this rank's). Tensors are valid
  // during the call only. Collective over every group (and tp with global_shape); call it on
  // every rank, with no backward in progress.
  using StateVisitor = std::function<void(const ParamSharding& sharding, StateKind kind, const at::Tensor& tensor)>;
  void visit_state(const StateVisitor& visit, bool global_shape);
  // Loads this rank's parts from the global tensors `source` returns (global_shape; undefined =
  // leave as is), slicing by tp sharding and ZeRO shard. No communication.
  using StateSource = std::function<at::Tensor(const ParamSharding& sharding, StateKind kind)>;
  void load_state(const StateSource& source);
  // The same, asking only for the elements this rank keeps: `source(sharding, kind, begin,
  // numel)` returns elements [begin, begin + numel) of the flattened LOCAL tensor (this rank's
  // tp/ep shard, sharding.local_shape), e.g. read as boxes of the global tensor from a
  // checkpoint. No communication.
  using RangeSource =
      std::function<at::Tensor(const ParamSharding& sharding, StateKind kind, int64_t begin, int64_t numel)>;
  void load_state_ranges(const RangeSource& source);
  // What this rank writes into a checkpoint, no communication: `visit(sharding, begin, param,
  // exp_avg, exp_avg_sq)` for elements [begin, begin + n) of a flattened local tensor (1-D views,
  // valid during the call). Over the ranks of the job every element of the global model comes
  // exactly once (the elements each rank counts in the gradient norm: its ZeRO slice of each
  // replication group, tp-replicated weights on tp rank 0, no uncounted copies).
  using OwnedVisitor = std::function<void(const ParamSharding& sharding, int64_t begin, const at::Tensor& param,
                                          const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq)>;
  void visit_owned(const OwnedVisitor& visit) const;

  // Bytes of parameter, gradient and optimizer buffers this rank holds now (measured).
  ParamMemory memory() const;
  // One line per group: its communicator, parameters, elements, buckets, ZeRO stage.
  std::string describe() const;
  GradSyncStats last_sync_stats() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::parallel
