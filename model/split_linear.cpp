// The B/W-split linear layer (and its grouped form for routed experts) and its queue. The
// autograd function computes dX = dY W in its backward and either returns dW = dY^T X to
// autograd (queue absent or not deferring) or queues that product, to be accumulated into
// W.grad later. Both paths run the same kernels on the same saved tensors, so deferring changes
// when dW is computed, never its bits.
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <algorithm>

#include "model/detail/layers.h"
#include "runtime/error.h"

namespace tandem::model {

// --- WeightGradQueue ------------------------------------------------------------------------

void WeightGradQueue::set_deferring(bool deferring) {
  std::lock_guard lock(mutex_);
  deferring_ = deferring;
}

bool WeightGradQueue::deferring() const {
  std::lock_guard lock(mutex_);
  return deferring_;
}

void WeightGradQueue::push(Task task) {
  std::lock_guard lock(mutex_);
  open_.push_back(std::move(task));
}

void WeightGradQueue::close_group() {
  std::lock_guard lock(mutex_);
  if (!open_.empty()) sealed_.push_back(std::exchange(open_, {}));
}

size_t WeightGradQueue::num_groups() const {
  std::lock_guard lock(mutex_);
  return sealed_.size() + (open_.empty() ? 0 : 1);
}

size_t WeightGradQueue::num_tasks() const {
  std::lock_guard lock(mutex_);
  size_t n = open_.size();
  for (const auto& group : sealed_) n += group.size();
  return n;
}

std::vector<WeightGradQueue::Task> WeightGradQueue::take_oldest_group() {
  std::lock_guard lock(mutex_);
  if (sealed_.empty()) return std::exchange(open_, {});
  std::vector<Task> group = std::move(sealed_.front());
  sealed_.pop_front();
  return group;
}

bool WeightGradQueue::run_next_group() {
  // Taken out under the lock and run without it: a task never pushes, but a backward on
  // another thread may push to the open group meanwhile.
  std::vector<Task> group = take_oldest_group();
  for (Task& task : group) task();
  return !group.empty();
}

void WeightGradQueue::run_all() {
  while (run_next_group()) {
  }
}

void WeightGradQueue::discard_all() {
  std::lock_guard lock(mutex_);
  sealed_.clear();
  open_.clear();
}

namespace detail {
namespace {

// Carries the queue through AutogradContext::saved_data (IValue capsules need no registration).
struct QueueCapsule : torch::CustomClassHolder {
  explicit QueueCapsule(std::shared_ptr<WeightGradQueue> q) : queue(std::move(q)) {}
  std::shared_ptr<WeightGradQueue> queue;
};

at::Tensor flatten_rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }  // [..., n] -> [M, n]

// dW = dY^T X (the product aten's linear backward computes for the weight of x W^T), in
// `grad_dtype`, the master weight's type. On the GPU a bf16 product is written as fp32 by the
// GEMM itself: no bf16 rounding of the gradient and no separate cast pass over it.
at::Tensor weight_grad(const at::Tensor& grad_out2d, const at::Tensor& input2d, at::ScalarType grad_dtype) {
  if (grad_out2d.is_cuda() && grad_dtype == at::kFloat && grad_out2d.scalar_type() == at::kBFloat16) {
    return at::mm(grad_out2d.t(), input2d, at::kFloat);  // [out, M] x [M, in] -> [out, in]
  }
  return grad_out2d.t().mm(input2d);
}

// Adds `grad` to `param`.grad the way AccumulateGrad does (first gradient taken as is).
void accumulate_grad(const at::Tensor& param, at::Tensor grad) {
  at::Tensor& slot = param.mutable_grad();
  if (!slot.defined()) {
    slot = grad.to(param.scalar_type());  // a bf16 product (autocast) lands in the fp32 master's dtype
  } else {
    torch::NoGradGuard no_grad;
    slot.add_(grad);
  }
}

struct SplitLinearFunction : torch::autograd::Function<SplitLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            std::shared_ptr<WeightGradQueue> queue) {
    // Under autocast, compute (and save for backward) in the autocast dtype, as aten's linear
    // does: saving the fp32 originals would leave backward multiplying a bf16 gradient with fp32
    // operands. The weight's cast comes from autocast's per-step cache; the leaf itself is kept
    // too, as the target a deferred W accumulates into.
    const c10::DeviceType device_type = input.device().type();
    at::Tensor input_c = input, weight_c = weight;
    if (at::autocast::is_autocast_enabled(device_type)) {
      const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
      input_c = at::autocast::cached_cast(dtype, input, device_type);
      weight_c = at::autocast::cached_cast(dtype, weight, device_type);
    }
    ctx->save_for_backward({input_c, weight_c, weight});
    if (queue)
      ctx->saved_data["queue"] = c10::IValue::make_capsule(c10::make_intrusive<QueueCapsule>(std::move(queue)));
    at::Tensor out2d = flatten_rows(input_c).mm(weight_c.t());  // [M, in] x [in, out] -> [M, out]
    std::vector<int64_t> shape = input.sizes().vec();
    shape.back() = weight.size(0);
    return out2d.view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[1];  // as used in forward (the autocast copy under autocast)
    const at::Tensor& weight_leaf = saved[2];
    // The incoming gradient has the output's dtype, which is the compute dtype.
    const at::Tensor grad_out2d = flatten_rows(grad_outputs[0]).to(weight.scalar_type());  // [M, out]
    at::Tensor grad_input, grad_weight;
    if (ctx->needs_input_grad(0)) grad_input = grad_out2d.mm(weight).view(input.sizes());  // [M, in]
    if (ctx->needs_input_grad(1)) {
      std::shared_ptr<WeightGradQueue> queue;
      if (auto it = ctx->saved_data.find("queue"); it != ctx->saved_data.end()) {
        queue = c10::static_intrusive_pointer_cast<QueueCapsule>(it->second.toCapsule())->queue;
      }
      // Deferring needs a leaf to accumulate into; a computed weight (a cast, a gathered
      // shard) hands its gradient back to autograd now.
      if (queue && queue->deferring() && weight_leaf.is_leaf()) {
        queue->push([weight_leaf, grad_out2d, input2d = flatten_rows(input)] {
          accumulate_grad(weight_leaf, weight_grad(grad_out2d, input2d, weight_leaf.scalar_type()));
        });
      } else {
        grad_weight = weight_grad(grad_out2d, flatten_rows(input), weight_leaf.scalar_type());
      }
    }
    return {grad_input, grad_weight, at::Tensor()};
  }
};

// Rows of `input` in groups (group g ends at row offsets[g]), group g times weights[g]^T, as
// one grouped GEMM each way (at::_grouped_mm: CUTLASS on Hopper for bf16, a loop of mm
// otherwise). The weight gradients of all groups are one more grouped GEMM, deferred into the
// queue like SplitLinearFunction's. Inputs: input, offsets, queue, then the weights (a list).
struct GroupedSplitLinearFunction : torch::autograd::Function<GroupedSplitLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& offsets,
                            std::shared_ptr<WeightGradQueue> queue, at::TensorList weights) {
    const c10::DeviceType device_type = input.device().type();
    const bool autocast = at::autocast::is_autocast_enabled(device_type);
    const at::ScalarType dtype = autocast ? at::autocast::get_autocast_dtype(device_type) : input.scalar_type();
    std::vector<at::Tensor> cast;  // each [out, in], in the compute dtype (autocast's cached copies)
    cast.reserve(weights.size());
    for (const at::Tensor& w : weights) cast.push_back(autocast ? at::autocast::cached_cast(dtype, w, device_type) : w);
    const at::Tensor stacked = at::stack(cast);                              // [G, out, in]
    const at::Tensor x = (autocast ? input.to(dtype) : input).contiguous();  // [R, in]
    std::vector<at::Tensor> saved = {x, stacked, offsets};
    saved.insert(saved.end(), weights.begin(), weights.end());  // the leaves a deferred W lands in
    ctx->save_for_backward(saved);
    if (queue) {
      ctx->saved_data["queue"] = c10::IValue::make_capsule(c10::make_intrusive<QueueCapsule>(std::move(queue)));
    }
    return at::_grouped_mm(x, stacked.transpose(1, 2), offsets);  // [R, in] x [G, in, out] -> [R, out]
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];        // [R, in]
    const at::Tensor& stacked = saved[1];  // [G, out, in]
    const at::Tensor& offsets = saved[2];
    const std::vector<at::Tensor> leaves(saved.begin() + 3, saved.end());
    const at::Tensor grad_out = grad_outputs[0].to(stacked.scalar_type()).contiguous();  // [R, out]
    // Returned: one slot per forward argument (input, offsets, queue, weights...). Asked: one
    // edge per tensor argument (input, offsets, weights...; the queue is not a tensor).
    constexpr size_t kFirstWeightSlot = 3;
    constexpr size_t kFirstWeightEdge = 2;
    torch::autograd::variable_list grads(kFirstWeightSlot + leaves.size());
    if (ctx->needs_input_grad(0)) grads[0] = at::_grouped_mm(grad_out, stacked, offsets);  // [R, in]
    bool any_weight = false;
    for (size_t g = 0; g < leaves.size(); ++g) any_weight = any_weight || ctx->needs_input_grad(kFirstWeightEdge + g);
    if (!any_weight) return grads;
    // dW_g = dY_g^T X_g for every group at once: [out, R] x [R, in] grouped along R -> [G, out, in].
    auto weight_grads = [grad_out, x, offsets] { return at::_grouped_mm(grad_out.t(), x, offsets); };
    std::shared_ptr<WeightGradQueue> queue;
    if (auto it = ctx->saved_data.find("queue"); it != ctx->saved_data.end()) {
      queue = c10::static_intrusive_pointer_cast<QueueCapsule>(it->second.toCapsule())->queue;
    }
    const bool all_leaves = std::all_of(leaves.begin(), leaves.end(), [](const at::Tensor& w) { return w.is_leaf(); });
    if (queue && queue->deferring() && all_leaves) {
      queue->push([leaves, weight_grads] {
        const at::Tensor all = weight_grads();
        for (size_t g = 0; g < leaves.size(); ++g) accumulate_grad(leaves[g], all[static_cast<int64_t>(g)]);
      });
    } else {
      const at::Tensor all = weight_grads();
      for (size_t g = 0; g < leaves.size(); ++g) grads[kFirstWeightSlot + g] = all[static_cast<int64_t>(g)];
    }
    return grads;
  }
};

}  // namespace

bool grouped_linear_supported(int64_t in_features, int64_t out_features) {
  // _grouped_mm wants row strides in multiples of 16 bytes: 8 elements cover bf16 and wider.
  return in_features % 8 == 0 && out_features % 8 == 0;
}

at::Tensor grouped_split_linear(const at::Tensor& input, at::TensorList weights, const at::Tensor& offsets,
                                const std::shared_ptr<WeightGradQueue>& queue) {
  TANDEM_CHECK(input.dim() == 2 && !weights.empty(), "grouped linear: input [{}] and {} weights",
               fmt::join(input.sizes(), ", "), weights.size());
  TANDEM_CHECK(offsets.dim() == 1 && offsets.numel() == static_cast<int64_t>(weights.size()) &&
                   offsets.scalar_type() == at::kInt && offsets.device() == input.device(),
               "grouped linear: offsets must be [{}] int32 on {}, got [{}] {} on {}", weights.size(),
               input.device().str(), fmt::join(offsets.sizes(), ", "), c10::toString(offsets.scalar_type()),
               offsets.device().str());
  for (const at::Tensor& w : weights) {
    TANDEM_CHECK(w.dim() == 2 && w.sizes() == weights[0].sizes() && w.size(1) == input.size(1),
                 "grouped linear: every weight must be [out, {}] of one shape, got [{}] and [{}]", input.size(1),
                 fmt::join(w.sizes(), ", "), fmt::join(weights[0].sizes(), ", "));
  }
  return GroupedSplitLinearFunction::apply(input, offsets, queue, weights);
}

at::Tensor split_linear(const at::Tensor& input, const at::Tensor& weight,
                        const std::shared_ptr<WeightGradQueue>& queue) {
  TANDEM_CHECK(input.size(-1) == weight.size(1), "linear input width {} != weight in_features {}", input.size(-1),
               weight.size(1));
  return SplitLinearFunction::apply(input, weight, queue);
}

SplitLinearImpl::SplitLinearImpl(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
}

at::Tensor SplitLinearImpl::forward(const at::Tensor& input, ForwardContext& ctx) {
  return split_linear(input, weight, ctx.queue);
}

}  // namespace detail
}  // namespace tandem::model
