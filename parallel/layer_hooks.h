// LayerHooks: the callbacks a model stage makes around each decoder layer's use of its
// parameters, so that something outside the model (ZeRO-3 in DataParallelOptimizer; later perhaps
// activation offloading) can make the layer's parameters present just before they are needed and
// drop them right after. The interface lives in parallel/ because parallel/ implements it and
// sits below model/ (model::Stage::set_layer_hooks takes it).
// Layers are named by their global index: main decoder layers 0..N-1, MTP depth k as N+k-1 (the
// index in their parameter names "model.layers.{i}.").
// Contract of the calls a stage makes, in this order for one layer:
//  - before_forward(i): the layer's forward is about to read its parameters.
//  - after_forward(i): the forward no longer reads them (autograd may still need them later).
//  - before_backward(i): the gradient of one of the layer's outputs has arrived, so its backward
//    is about to read the parameters; may come more than once for one backward (several outputs).
//  - after_backward(i): the gradients of the layer's inputs are complete, so its backward (the B
//    part; deferred weight gradients read no weights) is done with the parameters, and (CPU and
//    one device queue alike: autograd runs a parameter's accumulation as soon as its gradient
//    exists) every gradient of the layer's parameters has been accumulated. It comes before the
//    previous layer's before_backward. Not called when no input requires grad (release those at
//    the end of backward).
// The backward calls come from the autograd engine's thread. Every rank of a data-parallel group
// sees the same calls in the same order (same model, same schedule), which lets an implementation
// issue collectives from them.
#pragma once

#include <cstdint>

namespace tandem::parallel {

class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void before_forward(int64_t layer) = 0;
  virtual void after_forward(int64_t layer) = 0;
  virtual void before_backward(int64_t layer) = 0;
  virtual void after_backward(int64_t layer) = 0;
};

}  // namespace tandem::parallel
