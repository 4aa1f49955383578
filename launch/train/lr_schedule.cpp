// See lr_schedule.h.
#include "launch/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace tandem::launch {

double learning_rate(const OptimConfig& optim, int64_t step, int64_t total_steps) {
  if (optim.warmup_steps > 0 && step <= optim.warmup_steps) {
    return optim.lr * static_cast<double>(step) / static_cast<double>(optim.warmup_steps);
  }
  if (optim.lr_schedule == LrSchedule::kConstant) return optim.lr;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - optim.warmup_steps);
  const double progress =
      std::clamp(static_cast<double>(step - optim.warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace tandem::launch
