// See device_probe.h. Grid-stride loop: any count with one launch configuration.
#include <cuda_runtime.h>

#include "runtime/kernels/device_probe.h"

namespace tandem::runtime::kernels {
namespace {
__global__ void fill_iota_kernel(float* out, int64_t count, float base) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = base + static_cast<float>(i);
  }
}
}  // namespace

int launch_fill_iota(float* out, int64_t count, float base, runtime::CudaStream stream) {
  if (count <= 0) return static_cast<int>(cudaSuccess);
  constexpr int kThreads = 256;
  const int blocks =
      static_cast<int>((count + kThreads - 1) / kThreads < 1024 ? (count + kThreads - 1) / kThreads : 1024);
  fill_iota_kernel<<<blocks, kThreads, 0, stream>>>(out, count, base);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tandem::runtime::kernels
