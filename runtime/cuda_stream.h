// CudaStream: the type of a CUDA stream, nameable without the CUDA headers. cudaStream_t is a
// pointer to CUDA's opaque struct CUstream_st; declaring that struct here gives exactly the same
// type, so the headers of the torch-free kernels and of the communicators take a typed stream
// (never a void*) while only the .cu/.cpp files that launch work include CUDA. A null stream is
// CUDA's legacy default stream.
#pragma once

struct CUstream_st;

namespace tandem::runtime {

using CudaStream = CUstream_st*;

}  // namespace tandem::runtime
