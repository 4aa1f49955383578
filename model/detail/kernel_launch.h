// Shared by the tensor adapters of tandem's raw-pointer CUDA kernels (model/kernels/): the
// current stream of a tensor's device, and a launch status turned into a tandem::Error that names
// the kernel. Only for translation units built with TANDEM_HAVE_CUDA.
#pragma once

#ifdef TANDEM_HAVE_CUDA
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>

#include "model/kernels/moe_kernels.h"
#include "runtime/cuda_check.h"

namespace tandem::model::detail {

inline runtime::CudaStream current_stream(const at::Tensor& on) {
  return c10::cuda::getCurrentCUDAStream(on.device().index()).stream();
}

// Sets `type` to the tensor's storage type as the kernels' RowType; false when they do not handle it.
inline bool kernel_row_type(const at::Tensor& t, kernels::RowType& type) {
  switch (t.scalar_type()) {
    case at::kFloat: type = kernels::RowType::kFloat32; return true;
    case at::kBFloat16: type = kernels::RowType::kBFloat16; return true;
    case at::kHalf: type = kernels::RowType::kFloat16; return true;
    default: return false;
  }
}

}  // namespace tandem::model::detail

// A launch's status (the kernels return cudaError_t as int) as tandem::Error naming the kernel.
#define TANDEM_KERNEL_CHECK(launch, kernel)                                                                          \
  do {                                                                                                               \
    const int tandem_kernel_status_ = (launch);                                                                      \
    if (tandem_kernel_status_ != 0) [[unlikely]]                                                                     \
      ::tandem::runtime::detail::throw_cuda_error(static_cast<cudaError_t>(tandem_kernel_status_), kernel, __FILE__, \
                                                  __LINE__);                                                         \
  } while (0)
#endif
