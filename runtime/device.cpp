// Device selection (see device.h). The CUDA parts compile only when TANDEM_HAVE_CUDA is defined.
#include "runtime/device.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "runtime/error.h"

#ifdef TANDEM_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "runtime/cuda_check.h"
#endif

namespace tandem::runtime {

bool built_with_cuda() {
#ifdef TANDEM_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef TANDEM_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status so later calls are not confused by it
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

std::string gpu_unavailable_reason() {
#ifdef TANDEM_HAVE_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("no CUDA device: {}", cudaGetErrorString(status));
  }
  return count > 0 ? std::string() : std::string("no CUDA device visible to this process");
#else
  return "built without CUDA (configure with a CUDA toolkit and -DTANDEM_WITH_CUDA=ON)";
#endif
}

int threads_per_rank(int ranks_on_node) {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const int requested = omp != nullptr ? std::atoi(omp) : 0;
  if (requested > 0) return requested;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, ranks_on_node));
}

int select_device_for_local_rank(int local_rank) {
  const int count = cuda_device_count();
  TANDEM_CHECK_KIND(kCuda, count > 0, "cannot select a GPU for local rank {}: {}", local_rank,
                    gpu_unavailable_reason());
  const int device = local_rank % count;
#ifdef TANDEM_HAVE_CUDA
  TANDEM_CUDA_CHECK(cudaSetDevice(device));
#endif
  return device;
}

}  // namespace tandem::runtime
