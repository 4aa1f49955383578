// The recomputation node of model/detail/recompute.h. The first run is under NoGradGuard, so it
// stores nothing; the node keeps the inputs (detached: their own graphs are reached through the
// node's next edges) and the autocast state, because backward may run on another thread (the
// autograd engine's device threads on a GPU) where autocast is off by default.
#include <torch/csrc/autograd/function.h>

#include <ATen/autocast_mode.h>

#include <utility>

#include "model/autocast.h"
#include "model/detail/layers.h"
#include "model/detail/recompute.h"
#include "runtime/error.h"

namespace tandem::model::detail {

namespace {

using torch::autograd::variable_list;
// What the node runs in backward: the piece on its own copy of the forward's context.
using Rerun = std::function<variable_list(const variable_list& inputs)>;

class RecomputeNode final : public torch::autograd::Node {
 public:
  RecomputeNode(Rerun piece, const variable_list& inputs) : piece_(std::move(piece)) {
    for (const at::Tensor& input : inputs) {
      saved_.push_back({input.detach(), input.requires_grad(), input._version()});
    }
    const at::Tensor& any = inputs.front();
    device_type_ = any.device().type();
    autocast_ = at::autocast::is_autocast_enabled(device_type_);
    autocast_dtype_ = at::autocast::get_autocast_dtype(device_type_);
  }

  std::string name() const override { return "tandem::RecomputeNode"; }

  variable_list apply(variable_list&& grads) override {
    TANDEM_CHECK(piece_ != nullptr, "a recomputed piece was differentiated twice (backward needs retain_graph off)");
    variable_list leaves;
    for (const Saved& saved : saved_) {
      TANDEM_CHECK(saved.tensor._version() == saved.version,
                   "an input of a recomputed piece was modified in place after forward; recomputation needs it "
                   "unchanged");
      leaves.push_back(saved.tensor.detach().requires_grad_(saved.requires_grad));
    }
    variable_list outputs;
    {
      const torch::AutoGradMode grad_on(true);
      const AutocastScope autocast(device_type_, autocast_dtype_, autocast_);
      outputs = piece_(leaves);
    }
    TANDEM_CHECK(outputs.size() == grads.size(), "recomputed piece returned {} outputs, first run {}", outputs.size(),
                 grads.size());
    variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!grads[i].defined() || !outputs[i].requires_grad()) continue;
      roots.push_back(outputs[i]);
      root_grads.push_back(grads[i]);
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    variable_list input_grads;
    for (const at::Tensor& leaf : leaves) input_grads.push_back(leaf.requires_grad() ? leaf.grad() : at::Tensor());
    release_variables();
    return input_grads;
  }

  void release_variables() override {
    saved_.clear();
    piece_ = nullptr;
  }

 private:
  struct Saved {
    at::Tensor tensor;
    bool requires_grad;
    int64_t version;
  };
  Rerun piece_;
  std::vector<Saved> saved_;
  c10::DeviceType device_type_ = c10::DeviceType::CPU;
  bool autocast_ = false;
  c10::ScalarType autocast_dtype_ = c10::ScalarType::BFloat16;
};

}  // namespace

std::vector<at::Tensor> run_recomputed_in_backward(const RecomputedPiece& piece, const std::vector<at::Tensor>& inputs,
                                                   ForwardContext& ctx) {
  TANDEM_CHECK(!inputs.empty() && inputs.front().defined(), "a recomputed piece needs a defined first input");
  if (!torch::GradMode::is_enabled()) return piece(inputs, ctx);
  ForwardContext again = ctx;  // before the first run changes it (the logged balance loss)
  again.recomputing = true;
  std::vector<at::Tensor> outputs;
  {
    const torch::NoGradGuard no_grad;
    outputs = piece(inputs, ctx);
  }
  Rerun rerun = [piece, again](const variable_list& in) mutable { return piece(in, again); };
  const std::shared_ptr<RecomputeNode> node(new RecomputeNode(std::move(rerun), inputs), torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(inputs));
  for (at::Tensor& output : outputs) {
    TANDEM_CHECK(output.is_floating_point(), "a recomputed piece's outputs must be floating tensors");
    // A plain (non-view) tensor over the same storage, so the node can own its history.
    output = output.detach();
    torch::autograd::create_gradient_edge(output, node);
  }
  return outputs;
}

}  // namespace tandem::model::detail
