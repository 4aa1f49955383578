// A minimal CUDA kernel behind a torch-free raw-pointer API: fills a device buffer with
// rank-encoded values (value[i] = base + i). It proves the toolchain end to end (nvcc, the
// Hopper targets, launching, error checks) and gives GPU tests a closed-form device result.
#pragma once

#include <cstdint>

#include "runtime/cuda_stream.h"

namespace tandem::runtime::kernels {

// Fills `out[0..count)` (device memory, float32) with base + i on `stream` (a cudaStream_t;
// nullptr = the legacy default stream). Asynchronous; returns the launch status as an int
// (cudaError_t). Preconditions: out is a device pointer of at least `count` floats.
int launch_fill_iota(float* out, int64_t count, float base, runtime::CudaStream stream);

}  // namespace tandem::runtime::kernels
