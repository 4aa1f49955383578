// TANDEM_CUDA_CHECK and TANDEM_NCCL_CHECK: a failing CUDA or NCCL status becomes tandem::Error
// with the library's own text (and, for NCCL, its version and ncclGetLastError()), through one
// cold reporter per library. Only code built with CUDA includes this header.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "runtime/error.h"

namespace tandem::runtime::detail {
[[noreturn]] [[gnu::cold]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] [[gnu::cold]] void throw_nccl_error(ncclResult_t status, ncclComm_t comm, const char* call,
                                                 const char* file, int line);
}  // namespace tandem::runtime::detail

#define TANDEM_CUDA_CHECK(call)                                                                    \
  do {                                                                                             \
    const cudaError_t tandem_cuda_status_ = (call);                                                \
    if (tandem_cuda_status_ != cudaSuccess) [[unlikely]]                                           \
      ::tandem::runtime::detail::throw_cuda_error(tandem_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

// `comm` may be nullptr when the call has no communicator yet (ncclCommInitRank).
#define TANDEM_NCCL_CHECK(call, comm)                                                                      \
  do {                                                                                                     \
    const ncclResult_t tandem_nccl_status_ = (call);                                                       \
    if (tandem_nccl_status_ != ncclSuccess && tandem_nccl_status_ != ncclInProgress) [[unlikely]]          \
      ::tandem::runtime::detail::throw_nccl_error(tandem_nccl_status_, (comm), #call, __FILE__, __LINE__); \
  } while (0)
