// Learning-rate schedule values at the points that define it.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "launch/train/lr_schedule.h"

namespace tandem::launch {
namespace {

TEST(LrSchedule, LinearWarmupThenCosineToMinLr) {
  OptimConfig optim;
  optim.lr = 1e-3;
  optim.min_lr = 1e-4;
  optim.warmup_steps = 10;
  optim.lr_schedule = LrSchedule::kCosine;
  EXPECT_DOUBLE_EQ(learning_rate(optim, 1, 110), 1e-4);  // 1/10 of the peak
  EXPECT_DOUBLE_EQ(learning_rate(optim, 5, 110), 5e-4);
  EXPECT_DOUBLE_EQ(learning_rate(optim, 10, 110), 1e-3);      // peak at the end of warm-up
  EXPECT_NEAR(learning_rate(optim, 60, 110), 5.5e-4, 1e-15);  // half-way: mean of peak and floor
  const double quarter = 1e-4 + 0.5 * 9e-4 * (1 + std::cos(std::numbers::pi * 0.25));
  EXPECT_NEAR(learning_rate(optim, 35, 110), quarter, 1e-15);
  EXPECT_NEAR(learning_rate(optim, 110, 110), 1e-4, 1e-15);  // floor at the last step
  EXPECT_NEAR(learning_rate(optim, 200, 110), 1e-4, 1e-15);  // and after it
}

TEST(LrSchedule, ConstantAfterWarmupAndNoWarmup) {
  OptimConfig optim;
  optim.lr = 2e-3;
  optim.warmup_steps = 4;
  optim.lr_schedule = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(learning_rate(optim, 2, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(optim, 4, 100), 2e-3);
  EXPECT_DOUBLE_EQ(learning_rate(optim, 77, 100), 2e-3);
  optim.warmup_steps = 0;
  optim.lr_schedule = LrSchedule::kCosine;
  optim.min_lr = 0;
  EXPECT_DOUBLE_EQ(learning_rate(optim, 1, 100), 2e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 0.01)));
}

}  // namespace
}  // namespace tandem::launch
