// FlatParamGroup (see flat_params.h).
#include "parallel/flat_params.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "runtime/error.h"

namespace tandem::parallel {

FlatParamGroup::FlatParamGroup(std::string name, std::vector<NamedParam> params, int64_t num_shards,
                               int64_t shard_rank)
    : name_(std::move(name)), num_shards_(num_shards), shard_rank_(shard_rank) {
  TANDEM_CHECK(num_shards >= 1 && shard_rank >= 0 && shard_rank < num_shards, "bad shard {} of {} for group '{}'",
               shard_rank, num_shards, name_);
  TANDEM_CHECK(!params.empty(), "parameter group '{}' is empty", name_);
  const at::Device device = params.front().param.device();
  for (const NamedParam& each : params) {
    TANDEM_CHECK(each.param.scalar_type() == at::kFloat, "parameter '{}' is {}, flat groups hold float32 (master "
                                                          "weights)", each.name, c10::toString(each.param.scalar_type()));
    TANDEM_CHECK(each.param.device() == device, "parameter '{}' is on {}, the group on {}", each.name,
                 each.param.device().str(), device.str());
    ranges_.push_back({each.name, used_numel_, each.param.numel(), each.param.sizes().vec(), each.decay});
    used_numel_ += each.param.numel();
  }
  padded_numel_ = (used_numel_ + num_shards - 1) / num_shards * num_shards;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(device);
  params_ = at::zeros({padded_numel_}, options);
  grads_ = at::zeros({padded_numel_}, options);
  decay_mask_ = at::zeros({padded_numel_}, options);

  torch::autograd::AutoGradMode no_grad(false);
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor& param = params[i].param;
    const FlatRange& range = ranges_[i];
    at::Tensor values = params_.narrow(0, range.offset, range.numel);
    values.copy_(param.reshape({-1}));
    if (range.decay) decay_mask_.narrow(0, range.offset, range.numel).fill_(1.0);
    // Same leaf, new storage: the flat buffer (offset in elements, contiguous strides).
    param.set_(params_.storage(), range.offset, param.sizes(), at::detail::defaultStrides(param.sizes()));
    param.mutable_grad() = grads_.narrow(0, range.offset, range.numel).view(param.sizes());
    tensors_.push_back(param);
  }
}

at::Tensor FlatParamGroup::shard_of(const at::Tensor& flat) const {
  return flat.narrow(0, shard_offset(), shard_numel());
}

void FlatParamGroup::zero_grad() {
  grads_.zero_();
  // A caller that replaced a .grad (e.g. set it to undefined) would silently detach it from the
  // buffer; re-point every .grad so accumulation keeps landing in the flat buffer.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    at::Tensor& grad = tensors_[i].mutable_grad();
    const FlatRange& range = ranges_[i];
    if (!grad.defined() || grad.data_ptr() != grads_.narrow(0, range.offset, range.numel).data_ptr()) {
      grad = grads_.narrow(0, range.offset, range.numel).view(tensors_[i].sizes());
    }
  }
}

}  // namespace tandem::parallel
