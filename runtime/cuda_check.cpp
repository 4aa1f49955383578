// Reporters behind TANDEM_CUDA_CHECK / TANDEM_NCCL_CHECK (see cuda_check.h).
#include "runtime/cuda_check.h"

namespace tandem::runtime::detail {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);
  ::tandem::detail::throw_error(ErrorKind::kCuda, file, line,
                                fmt::format("{} failed on device {}: {} ({})", call, device, cudaGetErrorString(status),
                                            cudaGetErrorName(status)));
}

void throw_nccl_error(ncclResult_t status, ncclComm_t comm, const char* call, const char* file, int line) {
  int version = 0;
  ncclGetVersion(&version);
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  ::tandem::detail::throw_error(ErrorKind::kNccl, file, line,
                                fmt::format("{} failed: {} (NCCL {}.{}.{}; last error: {})", call,
                                            ncclGetErrorString(status), version / 10000, (version / 100) % 100,
                                            version % 100, (last != nullptr && *last != 0) ? last : "none"));
}

}  // namespace tandem::runtime::detail
