// FlatParamGroup: the parameters of one replication group (all of them replicated over the same
// ranks: dense weights over dp, routed experts over expert-dp) moved into one contiguous fp32
// buffer, and their gradients into a second one. Every parameter tensor keeps its identity (it
// stays the same autograd leaf) but its storage becomes a view of the flat buffer, and its
// .grad a view of the flat gradient buffer, so that:
//  - data-parallel reduction and ZeRO sharding work on large contiguous ranges, and a shard of
//    the optimizer state is a plain slice;
//  - gradients accumulate in place (autograd adds into a defined .grad; the deferred weight
//    gradients of the B/W split do too).
// Invariants: buffers are padded with zeros to a multiple of `num_shards`; the padding never
// belongs to a parameter; zero_grad() zeroes the gradient buffer and keeps every .grad defined.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::parallel {

struct NamedParam {
  std::string name;    // global name, e.g. "model.layers.3.mlp.experts.5.up_proj.weight"
  at::Tensor param;    // a leaf parameter (fp32, CPU or one device)
  bool decay = true;   // AdamW weight decay applies (false for norms and biases)
};

struct FlatRange {
  std::string name;
  int64_t offset = 0;  // element offset in the flat buffers
  int64_t numel = 0;
  std::vector<int64_t> shape;
  bool decay = true;
};

class FlatParamGroup {
 public:
  // Moves `params` into the flat buffers (their values are copied, then their storage replaced).
  // All must share dtype float32 and device. `num_shards` >= 1: ZeRO's shard count (1 = none).
  FlatParamGroup(std::string name, std::vector<NamedParam> params, int64_t num_shards, int64_t shard_rank);

  const std::string& name() const { return name_; }
  int64_t numel() const { return padded_numel_; }           // padded length of the buffers
  int64_t used_numel() const { return used_numel_; }        // elements that belong to parameters
  int64_t num_shards() const { return num_shards_; }
  int64_t shard_rank() const { return shard_rank_; }
  int64_t shard_numel() const { return padded_numel_ / num_shards_; }
  int64_t shard_offset() const { return shard_rank_ * shard_numel(); }

  at::Tensor& params() { return params_; }          // [numel] fp32: the parameter values
  at::Tensor& grads() { return grads_; }            // [numel] fp32: the accumulated gradients
  const at::Tensor& decay_mask() const { return decay_mask_; }  // [numel] 1 where decay applies
  // Slices of a flat buffer belonging to this rank's shard.
  at::Tensor shard_of(const at::Tensor& flat) const;

  const std::vector<FlatRange>& ranges() const { return ranges_; }
  const std::vector<at::Tensor>& tensors() const { return tensors_; }  // the parameters, same order

  // Zeroes every gradient (the buffer), keeping .grad defined as views of it.
  void zero_grad();

 private:
  std::string name_;
  int64_t num_shards_ = 1;
  int64_t shard_rank_ = 0;
  int64_t used_numel_ = 0;
  int64_t padded_numel_ = 0;
  at::Tensor params_;
  at::Tensor grads_;
  at::Tensor decay_mask_;
  std::vector<FlatRange> ranges_;
  std::vector<at::Tensor> tensors_;
};

}  // namespace tandem::parallel
