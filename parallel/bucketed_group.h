// BucketedGroup: the parameters of one replication group (all replicated over the same ranks and
// reduced by the same rule) held for data-parallel training under ZeRO stage 0-3. It owns their
// storage, cut into buckets (bucket_layout.h) of its communicator's size N:
//  - parameters: every bucket has a full fp32 buffer [N * shard] that its parameters are views
//    of (same leaf tensors, storage replaced). ZeRO-3 keeps only this rank's slice persistently
//    (shard buffer) and allocates a bucket's full buffer only while it is gathered; buckets with
//    a negative key (embedding, final norm, head: not part of a decoder layer) stay gathered
//    ("persistent"). A group of size 1 has nothing to shard over: ZeRO-3 acts as ZeRO-2 there.
//  - gradients: ZeRO 0/1 keep a full fp32 gradient buffer per bucket and every .grad is a view
//    of it (autograd accumulates in place); ZeRO 0 all-reduces it, ZeRO 1 reduce-scatters it
//    into this rank's slice of the buffer (the rest keeps the local sum: only the slice is
//    used); ZeRO 2/3 keep only the shard [shard] per rank:
//    autograd writes standalone .grad tensors, which a reduction packs into a transient bucket
//    buffer and drops, and the reduce-scattered slice is added into the shard gradient.
//  - AdamW moments: over the full buckets (ZeRO 0) or this rank's slices (ZeRO >= 1).
// A reduction sums over the communicator and multiplies by `grad_scale` afterwards (the sum
// first, as synchronize_gradients_reference does).
// Collective ordering: every rank of the communicator must call launch_reduction, gather_async,
// step, visit_state in the same order with the same buckets (the caller, DataParallelOptimizer,
// guarantees it). Not thread-safe: one thread at a time (the autograd engine's thread during
// backward, the caller's otherwise).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/adamw.h"
#include "parallel/bucket_layout.h"
#include "parallel/communicator.h"
#include "parallel/param_sharding.h"

namespace tandem::parallel {

struct GroupMember {
  ParamSharding sharding;
  at::Tensor param;            // the local leaf tensor (fp32); re-pointed into the group's storage
  bool decay = true;           // AdamW weight decay applies
  bool counts_in_norm = true;  // this rank counts it in the global gradient norm (see the facade)
  int64_t key = 0;             // bucket key: the decoder layer under ZeRO-3, -1 = persistent
};

struct BucketedGroupOptions {
  std::string name;                          // for messages: "dense", "dense-tp-partial", "experts"
  CommunicatorPtr comm;                      // the replication group (null = size 1)
  double grad_scale = 1.0;                   // applied after the sum (1 / dp)
  int64_t zero_stage = 0;                    // 0..3
  int64_t bucket_cap_numel = 1 << 22;        // elements per bucket (a larger parameter gets its own)
  at::ScalarType reduce_dtype = at::kFloat;  // dtype on the wire (gradients are fp32 in memory)
};

// Bytes of the buffers a group (or an optimizer) holds right now.
struct ParamMemory {
  int64_t param_bytes = 0;      // full parameter buffers allocated now + ZeRO-3 shards
  int64_t grad_bytes = 0;       // full gradient buffers (ZeRO 0/1) or shards (ZeRO 2/3), + live .grad
  int64_t optimizer_bytes = 0;  // AdamW first and second moments
  int64_t total() const { return param_bytes + grad_bytes + optimizer_bytes; }
  ParamMemory& operator+=(const ParamMemory& other);
};

enum class StateKind { kParam, kExpAvg, kExpAvgSq };
const char* state_kind_name(StateKind kind);  // "param", "exp_avg", "exp_avg_sq"

class BucketedGroup {
 public:
  // Takes over the members' storage (values are kept). Collective-free. Throws tandem::Error for
  // a parameter that is not a float32 leaf or lives on another device than the first.
  BucketedGroup(std::vector<GroupMember> members, BucketedGroupOptions options);
  ~BucketedGroup();
  BucketedGroup(const BucketedGroup&) = delete;
  BucketedGroup& operator=(const BucketedGroup&) = delete;

  const BucketedGroupOptions& options() const { return options_; }
  const BucketLayout& layout() const { return layout_; }
  const std::vector<GroupMember>& members() const { return members_; }
  int64_t num_buckets() const { return static_cast<int64_t>(layout_.buckets.size()); }
  int64_t num_shards() const { return layout_.num_shards; }
  int64_t shard_rank() const { return shard_rank_; }
  bool persistent(int64_t bucket) const;  // its full parameters always exist

  // --- gradients ---------------------------------------------------------------------------
  // Start of a step: ZeRO 0/1 zero the full gradient buffers (and re-point any replaced .grad);
  // ZeRO 2/3 zero the shard gradients and drop every .grad.
  void zero_grad();
  // Issues the bucket's reduction (all-reduce for ZeRO 0, reduce-scatter for 1/2/3) without
  // waiting. ZeRO 2/3 pack the members' .grad (undefined = zero) and drop them.
  void launch_reduction(int64_t bucket);
  // Tests the reductions in flight (MPI progresses inside such calls); never blocks.
  void poll();
  // Waits for every reduction in flight and applies scale / accumulation; afterwards the
  // gradients (ZeRO 0: full; ZeRO 1/2/3: this rank's slice) hold the contract's values.
  void complete_reductions();
  bool reductions_in_flight() const { return !in_flight_.empty(); }

  // Sum of squares of this rank's slice of every bucket's reduced gradient, members with
  // counts_in_norm only, as a 0-dim float64 tensor (summing over the communicator gives the
  // group's total once). Call after complete_reductions(). On CUDA: one fused, deterministic pass
  // (fused_optimizer.h), the result on the device without a host synchronisation.
  at::Tensor local_norm_squared() const;

  // AdamW on this rank's part (ZeRO 0: all of it), gradients multiplied by `grad_scale` first,
  // then the full parameters brought back: all-gather per bucket for ZeRO 1/2 and for ZeRO-3's
  // persistent buckets (collective over the communicator, blocking at the end). ZeRO-3 releases
  // gathered layer buckets first (their values become stale). On CUDA each bucket's update is one
  // fused kernel pass following the CPU composite's fp32 operation order (fused_optimizer.h).
  void step(const AdamWConfig& config, const AdamWStepScalars& scalars, double grad_scale);

  // --- ZeRO-3 parameter gathering (no-ops for persistent buckets) -----------------------------
  void gather_async(int64_t bucket);   // allocates the full buffer and starts its all-gather
  void wait_gathered(int64_t bucket);  // gathers if not started; returns when usable
  void release(int64_t bucket);        // frees the full buffer (waits for a gather in flight)
  bool gathered(int64_t bucket) const;

  // --- checkpoint state --------------------------------------------------------------------
  // Calls `visit(member index, kind, tensor)` for every member and kind, the tensor with the
  // member's local shape (this rank's tp/ep shard) and valid only during the call. Collective
  // over the communicator (ZeRO shards are all-gathered bucket by bucket).
  using StateVisitor = std::function<void(int64_t member, StateKind kind, const at::Tensor& local)>;
  void visit_state(const StateVisitor& visit);
  // The state this rank stands for in a checkpoint: its slice of every bucket (for every stage,
  // the elements it updates under ZeRO >= 1), members that count in the norm only, so that over
  // the ranks of a job each element of the global model is visited once. `visit(member, begin,
  // param, exp_avg, exp_avg_sq)` gets elements [begin, begin + n) of the member's flattened local
  // tensor as 1-D views, valid during the call. No communication.
  using OwnedVisitor = std::function<void(int64_t member, int64_t begin, const at::Tensor& param,
                                          const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq)>;
  void visit_owned(const OwnedVisitor& visit) const;
  // Writes this rank's parts: `source(member index, kind, begin, numel)` returns elements
  // [begin, begin + numel) of the member's flattened local tensor of that kind (any shape with
  // that many elements; undefined leaves them as they are). Asks only for what this rank keeps:
  // whole members where it holds them whole (parameters below ZeRO-3, moments at ZeRO 0), its
  // slice otherwise. No communication.
  using StateSource = std::function<at::Tensor(int64_t member, StateKind kind, int64_t begin, int64_t numel)>;
  void load_state(const StateSource& source);

  ParamMemory memory() const;

 private:
  struct Bucket;
  struct Reduction;

  at::Tensor grad_slice(int64_t bucket) const;     // this rank's reduced gradient of the bucket
  at::Tensor param_shard(int64_t bucket) const;    // ZeRO-3, released buckets: this rank's values
  at::Tensor optimizer_param(int64_t bucket);      // the parameter elements this rank updates
  int64_t optimizer_offset(int64_t bucket) const;  // into exp_avg_ / exp_avg_sq_
  int64_t optimizer_numel(int64_t bucket) const;
  void point_grads_at_buffers(int64_t bucket);  // ZeRO 0/1
  void finish(Reduction& reduction);

  BucketedGroupOptions options_;
  std::vector<GroupMember> members_;
  std::vector<int64_t> numels_;
  BucketLayout layout_;
  int64_t shard_rank_ = 0;
  std::vector<Bucket> buckets_;
  at::Tensor shard_params_;                  // ZeRO-3: this rank's slices of the buckets it releases
  std::vector<int64_t> param_shard_offset_;  // bucket -> offset in shard_params_ (-1: persistent)
  at::Tensor shard_grads_;                   // ZeRO 2/3 [shard_numel]
  at::Tensor exp_avg_;                       // [full_numel] (ZeRO 0) or [shard_numel]
  at::Tensor exp_avg_sq_;
  std::vector<Reduction> in_flight_;
};

}  // namespace tandem::parallel
