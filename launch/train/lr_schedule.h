// Learning rate per optimizer step: linear warm-up to `lr` over warmup_steps, then either
// constant or a half-cosine decay to min_lr at the last step (OptimConfig::lr_schedule).
#pragma once

#include <cstdint>

#include "launch/config/job_config.h"

namespace tandem::launch {

// `step` counts from 1 (the first optimizer step) to `total_steps`.
double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps);

}  // namespace tandem::launch
