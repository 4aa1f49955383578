// See dense_kernels.h. Both kernels are memory-bound: one thread per rotary pair / per element,
// grid-stride, fp32 arithmetic, loads and stores in the storage type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "model/kernels/dense_kernels.h"

namespace tandem::model::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

template <typename T>
__device__ __forceinline__ float load(const T* p, int64_t i);
template <>
__device__ __forceinline__ float load<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
__device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <>
__device__ __forceinline__ float load<__half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}

template <typename T>
__device__ __forceinline__ T to_type(float v);
template <>
__device__ __forceinline__ float to_type<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_type<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half to_type<__half>(float v) {
  return __float2half(v);
}

// Rounds v to T and back: reproduces an intermediate that the composite path stores in T.
template <typename T>
__device__ __forceinline__ float round_to(float v);
template <>
__device__ __forceinline__ float round_to<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float round_to<__nv_bfloat16>(float v) {
  return __bfloat162float(__float2bfloat16(v));
}
template <>
__device__ __forceinline__ float round_to<__half>(float v) {
  return __half2float(__float2half(v));
}

template <typename T>
__global__ void rotary_kernel(const T* __restrict__ x, T* out, const float* __restrict__ cos,
                              const float* __restrict__ sin, int64_t pairs, int64_t positions, int64_t half,
                              float sin_sign) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < pairs;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = k % half;                    // frequency index
    const int64_t p = (k / half) % positions;      // position
    const float c = cos[p * half + i];
    const float s = sin_sign * sin[p * half + i];
    const float even = load(x, 2 * k);
    const float odd = load(x, 2 * k + 1);
    out[2 * k] = to_type<T>(even * c - odd * s);
    out[2 * k + 1] = to_type<T>(even * s + odd * c);
  }
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__global__ void swiglu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                      int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load(gate, i);
    const float act = round_to<T>(g / (1.0f + expf(-g)));  // silu, stored in T by the composite
    out[i] = to_type<T>(act * load(up, i));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(const T* __restrict__ gate, const T* __restrict__ up,
                                       const T* __restrict__ d_out, T* __restrict__ d_gate, T* __restrict__ d_up,
                                       int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = load(gate, i);
    const float dy = load(d_out, i);
    const float sig = sigmoid(g);
    const float act = round_to<T>(g / (1.0f + expf(-g)));
    const float d_act = round_to<T>(dy * load(up, i));  // the product's gradient, stored in T
    d_up[i] = to_type<T>(dy * act);
    d_gate[i] = to_type<T>(d_act * sig * (1.0f + g * (1.0f - sig)));
  }
}

unsigned blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <typename Launch>
int dispatch(RowType type, Launch&& launch) {
  switch (type) {
    case RowType::kFloat32:
      launch(float{});
      break;
    case RowType::kBFloat16:
      launch(__nv_bfloat16{});
      break;
    case RowType::kFloat16:
      launch(__half{});
      break;
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_rotary(const void* x, void* out, RowType type, const float* cos, const float* sin, int64_t rows,
                  int64_t positions, int64_t width, bool inverse, void* stream) {
  if (x == nullptr || out == nullptr || cos == nullptr || sin == nullptr || rows < 0 || positions <= 0 ||
      width <= 0 || width % 2 != 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const int64_t half = width / 2;
  const int64_t pairs = rows * positions * half;
  if (pairs == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    rotary_kernel<T><<<blocks_for(pairs), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), cos, sin,
                                                             pairs, positions, half, inverse ? -1.0f : 1.0f);
  });
}

int launch_swiglu_forward(const void* gate, const void* up, void* out, RowType type, int64_t n, void* stream) {
  if (gate == nullptr || up == nullptr || out == nullptr || n < 0) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    swiglu_forward_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const T*>(gate),
                                                                 static_cast<const T*>(up), static_cast<T*>(out), n);
  });
}

int launch_swiglu_backward(const void* gate, const void* up, const void* d_out, void* d_gate, void* d_up,
                           RowType type, int64_t n, void* stream) {
  if (gate == nullptr || up == nullptr || d_out == nullptr || d_gate == nullptr || d_up == nullptr || n < 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (n == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    swiglu_backward_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(
        static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<const T*>(d_out), static_cast<T*>(d_gate),
        static_cast<T*>(d_up), n);
  });
}

}  // namespace tandem::model::kernels
