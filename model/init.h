// Parameter initialization as a pure function of (seed, parameter name, full global shape):
// every parallel layout starts from identical weights because a shard is always cut from the
// same full tensor, whichever rank draws it. Names are HF state-dict names.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string_view>

namespace tandem::model {

// 64-bit stream seed of one parameter: a mix of the run seed and a hash of the name.
uint64_t parameter_seed(uint64_t seed, std::string_view name);

// The full tensor for `name`: normal(0, std) from a CPU generator seeded with
// parameter_seed(seed, name), drawn in fp32 (so the values do not depend on the training dtype).
at::Tensor init_normal(uint64_t seed, std::string_view name, at::IntArrayRef full_shape, double std);

// Whether `name` is a norm weight (its module name ends in "norm": input_layernorm,
// q_a_layernorm, model.norm, enorm, hnorm, shared_head.norm, ...): those start at 1.
bool is_norm_weight(std::string_view name);

// Whether AdamW's decoupled weight decay applies to `name`: every parameter but norm weights and
// biases (the trainer's rule, which the benchmarks follow).
bool takes_weight_decay(std::string_view name);

}  // namespace tandem::model
