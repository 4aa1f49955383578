// The CUDA toolchain end to end on a real device: select a GPU, launch a tandem kernel through
// its raw-pointer API, and read back a closed-form result. Skips with the reason without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "runtime/cuda_check.h"
#include "runtime/device.h"
#include "runtime/kernels/device_probe.h"

namespace tandem::runtime {
namespace {

TEST(Device, FillKernelWritesEveryElement) {
  if (const std::string reason = gpu_unavailable_reason(); !reason.empty()) GTEST_SKIP() << reason;
  select_device_for_local_rank(0);
  constexpr int64_t kCount = 1 << 20;
  float* device = nullptr;
  TANDEM_CUDA_CHECK(cudaMalloc(&device, kCount * sizeof(float)));
  TANDEM_CUDA_CHECK(cudaMemset(device, 0xff, kCount * sizeof(float)));  // poison: NaN everywhere
  ASSERT_EQ(kernels::launch_fill_iota(device, kCount, 7.0f, nullptr), 0);
  std::vector<float> host(kCount);
  TANDEM_CUDA_CHECK(cudaMemcpy(host.data(), device, kCount * sizeof(float), cudaMemcpyDeviceToHost));
  TANDEM_CUDA_CHECK(cudaFree(device));
  for (int64_t i = 0; i < kCount; i += 4099) ASSERT_EQ(host[i], 7.0f + static_cast<float>(i)) << i;
  EXPECT_EQ(host[kCount - 1], 7.0f + static_cast<float>(kCount - 1));
}

TEST(Device, CudaErrorsBecomeTandemErrors) {
  if (const std::string reason = gpu_unavailable_reason(); !reason.empty()) GTEST_SKIP() << reason;
  try {
    TANDEM_CUDA_CHECK(cudaSetDevice(9999));
    FAIL() << "cudaSetDevice(9999) succeeded";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), ErrorKind::kCuda);
    EXPECT_NE(std::string(error.what()).find("cudaSetDevice(9999)"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace tandem::runtime
