// A checkpoint's weights into a model of any layout: each parameter of the model (this rank's
// tp slice or ep share, under its global name) is cut from the checkpoint's global tensor, so a
// checkpoint written by one layout loads into another. What `tandem generate` and post-training's
// checkpoint.init_from start from. Weights only: no optimizer state, step or data position.
#pragma once

#include <string>

#include "model/model.h"
#include "runtime/checkpoint_store.h"

namespace tandem::launch {

// Copies the fp32 master weights (the parameters where a run kept none) and the routing biases
// of `checkpoint` into `model`'s parameters and buffers. Throws kInput naming the checkpoint and
// the tensor when one is missing or its global shape differs from the model's.
void load_model_weights(const runtime::LoadedCheckpoint& checkpoint, model::Model& model);

}  // namespace tandem::launch
