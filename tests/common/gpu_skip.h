// TANDEM_SKIP_WITHOUT_GPU(): the first statement of a gpu-labelled gtest; skips the test with
// the reason (no driver, no device, CPU-only LibTorch) so that ctest reports it skipped rather
// than passed (tests/gpu/CMakeLists.txt matches the SKIPPED line).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "runtime/device.h"

#define TANDEM_SKIP_WITHOUT_GPU()                                                           \
  do {                                                                                      \
    if (const std::string tandem_gpu_reason_ = ::tandem::runtime::gpu_unavailable_reason(); \
        !tandem_gpu_reason_.empty())                                                        \
      GTEST_SKIP() << tandem_gpu_reason_;                                                   \
  } while (0)
