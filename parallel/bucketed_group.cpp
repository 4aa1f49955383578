// BucketedGroup (see bucketed_group.h): storage, reductions, AdamW per bucket, ZeRO-3 gathers,
// checkpoint state. ZeRO-3 releases a bucket by detaching the data of its storage (the StorageImpl
// stays, with no bytes) and gathers it by giving the same StorageImpl fresh bytes, so every view
// of it (the parameters and the tensors autograd saved for backward) sees the gathered values
// again. The communicator writes into that memory directly, which bumps no version counter.
#include "parallel/bucketed_group.h"

#include <ATen/ATen.h>
#include <c10/core/StorageImpl.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <utility>

#include "parallel/fused_optimizer.h"
#include "runtime/error.h"

namespace tandem::parallel {
namespace {

bool trivial(const CommunicatorPtr& comm) { return !comm || comm->size() == 1; }

void free_storage(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, tensor.device()));
  storage->set_nbytes(0);
}

void allocate_storage(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  const size_t nbytes = static_cast<size_t>(tensor.numel()) * tensor.element_size();
  storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
  storage->set_nbytes(nbytes);
}

int64_t storage_bytes(const at::Tensor& tensor) {
  return tensor.defined() ? static_cast<int64_t>(tensor.storage().nbytes()) : 0;
}

}  // namespace

ParamMemory& ParamMemory::operator+=(const ParamMemory& other) {
  param_bytes += other.param_bytes;
  grad_bytes += other.grad_bytes;
  optimizer_bytes += other.optimizer_bytes;
  return *this;
}

const char* state_kind_name(StateKind kind) {
  switch (kind) {
    case StateKind::kParam: return "param";
    case StateKind::kExpAvg: return "exp_avg";
    case StateKind::kExpAvgSq: return "exp_avg_sq";
  }
  return "?";
}

struct BucketedGroup::Bucket {
  at::Tensor full_params;  // [N * shard]; its storage is detached while a ZeRO-3 bucket is released
  at::Tensor full_grads;   // ZeRO 0/1 [N * shard]
  bool is_gathered = true;
  WorkHandle gather;                   // ZeRO-3 all-gather in flight
  std::vector<ElementRun> decay_runs;  // relative to the optimizer extent
  std::vector<ElementRun> norm_runs;   // relative to this rank's slice
};

struct BucketedGroup::Reduction {
  int64_t bucket = 0;
  WorkHandle work;
  at::Tensor wire;    // what travelled: the full gradient (or its cast), or the packed bucket
  at::Tensor output;  // reduce-scatter: this rank's summed slice
};

BucketedGroup::BucketedGroup(std::vector<GroupMember> members, BucketedGroupOptions options)
    : options_(std::move(options)), members_(std::move(members)) {
  TANDEM_CHECK(!members_.empty(), "parameter group '{}' is empty", options_.name);
  TANDEM_CHECK(options_.zero_stage >= 0 && options_.zero_stage <= 3, "ZeRO stage {} is not 0..3", options_.zero_stage);
  const int64_t num_shards = trivial(options_.comm) ? 1 : options_.comm->size();
  shard_rank_ = trivial(options_.comm) ? 0 : options_.comm->rank();
  // With one replica there is nothing to shard parameters over: ZeRO-3 is ZeRO-2 (the shard is
  // the whole bucket), which keeps a single copy of the parameters.
  if (num_shards == 1) options_.zero_stage = std::min<int64_t>(options_.zero_stage, 2);
  const at::Device device = members_.front().param.device();
  std::vector<int64_t> keys;
  for (const GroupMember& m : members_) {
    TANDEM_CHECK(m.param.defined() && m.param.is_leaf() && m.param.scalar_type() == at::kFloat,
                 "{}: data-parallel parameters are float32 leaves (master weights); '{}' is not", options_.name,
                 m.sharding.name);
    TANDEM_CHECK(m.param.device() == device, "{}: '{}' is on {}, the group on {}", options_.name, m.sharding.name,
                 m.param.device().str(), device.str());
    numels_.push_back(m.param.numel());
    keys.push_back(options_.zero_stage == 3 ? m.key : 0);
  }
  layout_ = plan_buckets(numels_, keys, options_.bucket_cap_numel, num_shards);
  std::vector<bool> decays, counted;
  for (const GroupMember& m : members_) {
    decays.push_back(m.decay);
    counted.push_back(m.counts_in_norm);
  }

  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const int64_t z = options_.zero_stage;
  exp_avg_ = at::zeros({z == 0 ? layout_.full_numel : layout_.shard_numel}, fp32);
  exp_avg_sq_ = at::zeros_like(exp_avg_);
  if (z >= 2) shard_grads_ = at::zeros({layout_.shard_numel}, fp32);
  // ZeRO-3 shards only the buckets it releases; persistent ones are updated in place like ZeRO-2.
  param_shard_offset_.assign(layout_.buckets.size(), -1);
  int64_t released_numel = 0;
  for (int64_t b = 0; b < num_buckets(); ++b) {
    if (persistent(b)) continue;
    param_shard_offset_[b] = released_numel;
    released_numel += layout_.buckets[b].shard_numel;
  }
  if (released_numel > 0) shard_params_ = at::zeros({released_numel}, fp32);

  torch::autograd::AutoGradMode no_grad(false);
  buckets_.resize(layout_.buckets.size());
  for (int64_t b = 0; b < num_buckets(); ++b) {
    const BucketSpec& spec = layout_.buckets[b];
    Bucket& bucket = buckets_[b];
    const int64_t numel = layout_.bucket_numel(b);
    bucket.full_params = at::zeros({numel}, fp32);
    for (size_t slot = 0; slot < spec.members.size(); ++slot) {
      at::Tensor& param = members_[spec.members[slot]].param;
      bucket.full_params.narrow(0, spec.offsets[slot], param.numel()).copy_(param.reshape({-1}));
      // Same leaf, new storage: the bucket's buffer (contiguous strides).
      param.set_(bucket.full_params.storage(), spec.offsets[slot], param.sizes(),
                 at::detail::defaultStrides(param.sizes()));
      param.mutable_grad() = at::Tensor();
    }
    if (z <= 1) {
      bucket.full_grads = at::zeros({numel}, fp32);
      point_grads_at_buffers(b);
    }
    const ElementRun slice{shard_rank_ * spec.shard_numel, spec.shard_numel};
    bucket.decay_runs = selected_runs(spec, numels_, decays, z == 0 ? ElementRun{0, numel} : slice);
    bucket.norm_runs = selected_runs(spec, numels_, counted, slice);
    if (!persistent(b)) {
      param_shard(b).copy_(bucket.full_params.narrow(0, slice.begin, slice.length));
      release(b);
    }
  }
}

BucketedGroup::~BucketedGroup() {
  // Reductions and gathers in flight finish before their buffers go (Work's destructor waits);
  // the parameters keep pointing at storage that stays alive through their own references.
  in_flight_.clear();
  for (int64_t b = 0; b < num_buckets(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.gather.reset();
  }
}

bool BucketedGroup::persistent(int64_t bucket) const {
  return options_.zero_stage < 3 || layout_.num_shards == 1 || layout_.buckets[bucket].key < 0;
}

void BucketedGroup::point_grads_at_buffers(int64_t bucket) {
  const BucketSpec& spec = layout_.buckets[bucket];
  const at::Tensor& buffer = buckets_[bucket].full_grads;
  for (size_t slot = 0; slot < spec.members.size(); ++slot) {
    at::Tensor& param = members_[spec.members[slot]].param;
    at::Tensor view = buffer.narrow(0, spec.offsets[slot], param.numel());
    at::Tensor& grad = param.mutable_grad();
    if (!grad.defined() || grad.data_ptr() != view.data_ptr()) grad = view.view(param.sizes());
  }
}

void BucketedGroup::zero_grad() {
  TANDEM_CHECK(in_flight_.empty(), "{}: zero_grad with reductions in flight; call finish_gradient_sync first",
               options_.name);
  torch::autograd::AutoGradMode no_grad(false);
  if (options_.zero_stage <= 1) {
    for (int64_t b = 0; b < num_buckets(); ++b) {
      buckets_[b].full_grads.zero_();
      point_grads_at_buffers(b);
    }
    return;
  }
  shard_grads_.zero_();
  for (GroupMember& m : members_) m.param.mutable_grad() = at::Tensor();
}

void BucketedGroup::launch_reduction(int64_t bucket) {
  torch::autograd::AutoGradMode no_grad(false);
  const BucketSpec& spec = layout_.buckets[bucket];
  const int64_t numel = layout_.bucket_numel(bucket);
  const at::ScalarType wire_dtype = options_.reduce_dtype;
  Reduction reduction;
  reduction.bucket = bucket;
  if (options_.zero_stage <= 1) {
    const at::Tensor& grads = buckets_[bucket].full_grads;
    reduction.wire = wire_dtype == at::kFloat ? grads : grads.to(wire_dtype);
    if (options_.zero_stage == 1 && !trivial(options_.comm)) {
      // ZeRO-1 updates only this rank's slice and gathers the parameters afterwards: the
      // reduce-scattered slice is all it needs (half the volume of an all-reduce).
      reduction.output = at::empty({spec.shard_numel}, reduction.wire.options());
      reduction.work = options_.comm->reduce_scatter_async(reduction.output, reduction.wire, ReduceOp::kSum);
    } else if (!trivial(options_.comm)) {
      reduction.work = options_.comm->all_reduce_async(reduction.wire, ReduceOp::kSum);
    }
  } else {
    // Pack the members' gradients (autograd's standalone tensors) and drop them: from here on
    // the bucket buffer is the only full copy, and it lives until the reduce-scatter is done.
    reduction.wire = at::zeros({numel}, buckets_[bucket].full_params.options().dtype(wire_dtype));
    for (size_t slot = 0; slot < spec.members.size(); ++slot) {
      at::Tensor& param = members_[spec.members[slot]].param;
      at::Tensor& grad = param.mutable_grad();
      if (grad.defined()) reduction.wire.narrow(0, spec.offsets[slot], param.numel()).copy_(grad.reshape({-1}));
      grad = at::Tensor();
    }
    if (trivial(options_.comm)) {
      reduction.output = reduction.wire;
    } else {
      reduction.output = at::empty({spec.shard_numel}, reduction.wire.options());
      reduction.work = options_.comm->reduce_scatter_async(reduction.output, reduction.wire, ReduceOp::kSum);
    }
  }
  in_flight_.push_back(std::move(reduction));
}

void BucketedGroup::poll() {
  for (Reduction& reduction : in_flight_) {
    if (reduction.work) reduction.work->is_completed();
  }
}

void BucketedGroup::finish(Reduction& reduction) {
  if (reduction.work) reduction.work->wait();
  const double scale = options_.grad_scale;
  if (reduction.output.defined() && options_.zero_stage == 1) {
    // Only the slice holds the reduced values; the rest of the buffer keeps this rank's own sum.
    at::Tensor slice = grad_slice(reduction.bucket);
    slice.copy_(reduction.output);
    if (scale != 1.0) slice.mul_(scale);
  } else if (options_.zero_stage <= 1) {
    at::Tensor& grads = buckets_[reduction.bucket].full_grads;
    if (!reduction.wire.is_same(grads)) grads.copy_(reduction.wire);
    if (scale != 1.0) grads.mul_(scale);
  } else {
    const BucketSpec& spec = layout_.buckets[reduction.bucket];
    // shard += scale * slice: on a zeroed shard exactly the scaled sum, later micro-batches add.
    shard_grads_.narrow(0, spec.shard_offset, spec.shard_numel).add_(reduction.output.to(at::kFloat), scale);
  }
}

void BucketedGroup::complete_reductions() {
  torch::autograd::AutoGradMode no_grad(false);
  for (Reduction& reduction : in_flight_) finish(reduction);
  in_flight_.clear();
}

at::Tensor BucketedGroup::param_shard(int64_t bucket) const {
  return shard_params_.narrow(0, param_shard_offset_[bucket], layout_.buckets[bucket].shard_numel);
}

at::Tensor BucketedGroup::grad_slice(int64_t bucket) const {
  const BucketSpec& spec = layout_.buckets[bucket];
  if (options_.zero_stage <= 1) {
    return buckets_[bucket].full_grads.narrow(0, shard_rank_ * spec.shard_numel, spec.shard_numel);
  }
  return shard_grads_.narrow(0, spec.shard_offset, spec.shard_numel);
}

at::Tensor BucketedGroup::local_norm_squared() const {
  torch::autograd::AutoGradMode no_grad(false);
  if (fused_optimizer_applies(exp_avg_)) {
    // One deterministic pass over every counted run (fp64 partials), no float64 copies.
    std::vector<TensorRuns> parts;
    for (int64_t b = 0; b < num_buckets(); ++b) parts.push_back({grad_slice(b), &buckets_[b].norm_runs});
    return fused_sum_squares(parts, exp_avg_.device());
  }
  at::Tensor total = at::zeros({}, exp_avg_.options().dtype(at::kDouble));
  for (int64_t b = 0; b < num_buckets(); ++b) {
    const at::Tensor slice = grad_slice(b);
    for (const ElementRun& run : buckets_[b].norm_runs) {
      total.add_(slice.narrow(0, run.begin, run.length).to(at::kDouble).square().sum());
    }
  }
  return total;
}

int64_t BucketedGroup::optimizer_offset(int64_t bucket) const {
  const BucketSpec& spec = layout_.buckets[bucket];
  return options_.zero_stage == 0 ? spec.full_offset : spec.shard_offset;
}

int64_t BucketedGroup::optimizer_numel(int64_t bucket) const {
  return options_.zero_stage == 0 ? layout_.bucket_numel(bucket) : layout_.buckets[bucket].shard_numel;
}

at::Tensor BucketedGroup::optimizer_param(int64_t bucket) {
  const BucketSpec& spec = layout_.buckets[bucket];
  switch (options_.zero_stage) {
    case 0: return buckets_[bucket].full_params;
    default:
      if (!persistent(bucket)) return param_shard(bucket);
      return buckets_[bucket].full_params.narrow(0, shard_rank_ * spec.shard_numel, spec.shard_numel);
  }
}

void BucketedGroup::step(const AdamWConfig& config, const AdamWStepScalars& scalars, double grad_scale) {
  TANDEM_CHECK(in_flight_.empty(), "{}: optimizer step with reductions in flight; call finish_gradient_sync first",
               options_.name);
  torch::autograd::AutoGradMode no_grad(false);
  const int64_t z = options_.zero_stage;
  const bool sharded = z >= 1 && !trivial(options_.comm);
  if (z == 3) {
    for (int64_t b = 0; b < num_buckets(); ++b) {
      if (!persistent(b)) release(b);
    }
  }
  struct Gather {
    WorkHandle work;
    at::Tensor input;
  };
  std::vector<Gather> gathers;
  for (int64_t b = 0; b < num_buckets(); ++b) {
    at::Tensor param = optimizer_param(b);
    at::Tensor grad = z == 0 ? buckets_[b].full_grads : grad_slice(b);
    at::Tensor m = exp_avg_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    at::Tensor v = exp_avg_sq_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    if (fused_optimizer_applies(param)) {
      // One pass per bucket (the composite below makes ~9), scaling the gradient as it reads it.
      fused_adamw_step_(param, grad, m, v, buckets_[b].decay_runs, config, scalars, grad_scale);
    } else {
      if (grad_scale != 1.0) grad = grad * grad_scale;
      adamw_update_moments_(grad, m, v, config);
      for (const ElementRun& run : buckets_[b].decay_runs) {
        at::Tensor decayed = param.narrow(0, run.begin, run.length);
        adamw_apply_decay_(decayed, config, scalars);
      }
      adamw_apply_step_(param, m, v, config, scalars);
    }
    // Every replica needs the updated full bucket back (ZeRO-3: only the persistent ones; the
    // others are gathered again before their next use). The slice is copied because the
    // all-gather's input may not overlap its output.
    if (sharded && persistent(b)) {
      Gather gather{nullptr, param.clone()};
      gather.work = options_.comm->all_gather_async(buckets_[b].full_params, gather.input);
      gathers.push_back(std::move(gather));
    }
  }
  for (Gather& gather : gathers) gather.work->wait();
}

void BucketedGroup::gather_async(int64_t bucket) {
  Bucket& state = buckets_[bucket];
  if (persistent(bucket) || state.is_gathered || state.gather) return;
  allocate_storage(state.full_params);
  state.gather = options_.comm->all_gather_async(state.full_params, param_shard(bucket));
}

void BucketedGroup::wait_gathered(int64_t bucket) {
  Bucket& state = buckets_[bucket];
  if (persistent(bucket) || state.is_gathered) return;
  if (!state.gather) gather_async(bucket);
  state.gather->wait();
  state.gather.reset();
  state.is_gathered = true;
}

void BucketedGroup::release(int64_t bucket) {
  Bucket& state = buckets_[bucket];
  if (persistent(bucket)) return;
  if (state.gather) {
    state.gather->wait();
    state.gather.reset();
  }
  if (state.full_params.storage().nbytes() > 0) free_storage(state.full_params);
  state.is_gathered = false;
}

bool BucketedGroup::gathered(int64_t bucket) const { return persistent(bucket) || buckets_[bucket].is_gathered; }

void BucketedGroup::visit_state(const StateVisitor& visit) {
  torch::autograd::AutoGradMode no_grad(false);
  const bool sharded_state = options_.zero_stage >= 1 && !trivial(options_.comm);
  // The full bucket of a sharded buffer: all-gather this rank's slice.
  auto gather = [&](const at::Tensor& shard_buffer, int64_t bucket) {
    const BucketSpec& spec = layout_.buckets[bucket];
    const at::Tensor slice = shard_buffer.narrow(0, spec.shard_offset, spec.shard_numel);
    at::Tensor full = at::empty({layout_.bucket_numel(bucket)}, slice.options());
    options_.comm->all_gather(full, slice.contiguous());
    return full;
  };
  for (int64_t b = 0; b < num_buckets(); ++b) {
    const BucketSpec& spec = layout_.buckets[b];
    at::Tensor params = buckets_[b].full_params;
    if (!gathered(b)) {
      params = at::empty({layout_.bucket_numel(b)}, param_shard(b).options());
      options_.comm->all_gather(params, param_shard(b));
    }
    const at::Tensor m = sharded_state ? gather(exp_avg_, b)
                                       : exp_avg_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    const at::Tensor v = sharded_state ? gather(exp_avg_sq_, b)
                                       : exp_avg_sq_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    for (size_t slot = 0; slot < spec.members.size(); ++slot) {
      const int64_t member = spec.members[slot];
      const at::IntArrayRef shape = members_[member].param.sizes();
      auto local = [&](const at::Tensor& full) {
        return full.narrow(0, spec.offsets[slot], numels_[member]).view(shape);
      };
      visit(member, StateKind::kParam, local(params));
      visit(member, StateKind::kExpAvg, local(m));
      visit(member, StateKind::kExpAvgSq, local(v));
    }
  }
}

void BucketedGroup::visit_owned(const OwnedVisitor& visit) const {
  torch::autograd::AutoGradMode no_grad(false);
  for (int64_t b = 0; b < num_buckets(); ++b) {
    const BucketSpec& spec = layout_.buckets[b];
    const ElementRun slice{shard_rank_ * spec.shard_numel, spec.shard_numel};
    const at::Tensor params = persistent(b) ? buckets_[b].full_params.narrow(0, slice.begin, slice.length)
                                            : param_shard(b);
    const int64_t moments_begin = optimizer_offset(b) + (options_.zero_stage == 0 ? slice.begin : 0);
    const at::Tensor m = exp_avg_.narrow(0, moments_begin, slice.length);
    const at::Tensor v = exp_avg_sq_.narrow(0, moments_begin, slice.length);
    for (size_t slot = 0; slot < spec.members.size(); ++slot) {
      const int64_t member = spec.members[slot];
      if (!members_[member].counts_in_norm) continue;
      const int64_t lo = std::max(spec.offsets[slot], slice.begin);
      const int64_t hi = std::min(spec.offsets[slot] + numels_[member], slice.begin + slice.length);
      if (lo >= hi) continue;
      auto part = [&](const at::Tensor& t) { return t.narrow(0, lo - slice.begin, hi - lo); };
      visit(member, lo - spec.offsets[slot], part(params), part(m), part(v));
    }
  }
}

void BucketedGroup::load_state(const StateSource& source) {
  TANDEM_CHECK(in_flight_.empty(), "{}: load_state with reductions in flight", options_.name);
  torch::autograd::AutoGradMode no_grad(false);
  const bool zero0 = options_.zero_stage == 0;
  for (int64_t b = 0; b < num_buckets(); ++b) {
    const BucketSpec& spec = layout_.buckets[b];
    const ElementRun slice{shard_rank_ * spec.shard_numel, spec.shard_numel};
    const at::Tensor m = exp_avg_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    const at::Tensor v = exp_avg_sq_.narrow(0, optimizer_offset(b), optimizer_numel(b));
    for (size_t slot = 0; slot < spec.members.size(); ++slot) {
      const int64_t member = spec.members[slot];
      const int64_t begin = spec.offsets[slot];
      const int64_t numel = numels_[member];
      // The part of [begin, begin + numel) inside this rank's slice, in bucket coordinates.
      const int64_t lo = std::max(begin, slice.begin);
      const int64_t hi = std::min(begin + numel, slice.begin + slice.length);
      // `full_target` (bucket coordinates) takes the whole member, else `shard_target` (slice
      // coordinates) its part in the slice.
      auto load = [&](StateKind kind, const at::Tensor& full_target, const at::Tensor& shard_target) {
        const bool whole = full_target.defined();
        if (!whole && (!shard_target.defined() || lo >= hi)) return;
        const int64_t first = whole ? 0 : lo - begin, count = whole ? numel : hi - lo;
        const at::Tensor value = source(member, kind, first, count);
        if (!value.defined()) return;
        TANDEM_CHECK_INPUT(value.numel() == count, "{}: '{}' {}: {} elements given for {}", options_.name,
                           members_[member].sharding.name, state_kind_name(kind), value.numel(), count);
        const at::Tensor flat = value.reshape({-1}).to(at::kFloat);
        if (whole) full_target.narrow(0, begin, numel).copy_(flat);
        if (shard_target.defined() && lo < hi) {
          shard_target.narrow(0, lo - slice.begin, hi - lo).copy_(flat.narrow(0, lo - begin - first, hi - lo));
        }
      };
      load(StateKind::kParam, gathered(b) ? buckets_[b].full_params : at::Tensor(),
           persistent(b) ? at::Tensor() : param_shard(b));
      load(StateKind::kExpAvg, zero0 ? m : at::Tensor(), zero0 ? at::Tensor() : m);
      load(StateKind::kExpAvgSq, zero0 ? v : at::Tensor(), zero0 ? at::Tensor() : v);
    }
  }
}

ParamMemory BucketedGroup::memory() const {
  ParamMemory memory;
  memory.param_bytes = storage_bytes(shard_params_);
  memory.grad_bytes = storage_bytes(shard_grads_);
  memory.optimizer_bytes = storage_bytes(exp_avg_) + storage_bytes(exp_avg_sq_);
  for (const Bucket& bucket : buckets_) {
    memory.param_bytes += storage_bytes(bucket.full_params);
    memory.grad_bytes += storage_bytes(bucket.full_grads);
  }
  for (const Reduction& reduction : in_flight_) {
    if (options_.zero_stage >= 2) memory.grad_bytes += storage_bytes(reduction.wire);
  }
  // ZeRO 2/3: gradients autograd produced that no reduction has packed yet.
  if (options_.zero_stage >= 2) {
    for (const GroupMember& m : members_) {
      if (m.param.grad().defined()) memory.grad_bytes += m.param.grad().nbytes();
    }
  }
  return memory;
}

}  // namespace tandem::parallel
