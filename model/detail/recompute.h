// Internal: a piece of forward whose activations are not kept for backward but recomputed there
// (model/recompute.h says which pieces). The piece runs once without recording a graph; its
// outputs get one autograd node that, when backward reaches it, runs the piece again with grad
// on (and the autocast state of the first run), back-propagates through that fresh graph (which
// accumulates the parameters' gradients, or defers them to the W queue, exactly as the original
// graph would) and returns the gradients of the inputs. This is the reentrant form of
// activation checkpointing: only the inputs are held between forward and backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace tandem::model::detail {

struct ForwardContext;  // model/detail/layers.h

// The recomputed piece: deterministic in its inputs and parameters. It runs first on the caller's
// context (the forward: side effects such as load counting happen here) and again in backward on
// a copy of it taken before the first run, with ForwardContext::recomputing set (no side effects).
using RecomputedPiece =
    std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>& inputs, ForwardContext& ctx)>;

// Runs `piece` on `inputs` and `ctx` and returns its outputs, which are new tensors (never views
// of the inputs). With grad mode off, the plain outputs. Every output must be a floating tensor.
std::vector<at::Tensor> run_recomputed_in_backward(const RecomputedPiece& piece, const std::vector<at::Tensor>& inputs,
                                                   ForwardContext& ctx);

}  // namespace tandem::model::detail
