// See dense_kernels.h. Both kernels are memory-bound: each thread moves 16 bytes per tensor
// (4 rotary pairs or 8 bf16 elements) when alignment and sizes allow, one pair/element otherwise;
// grid-stride, fp32 arithmetic, loads and stores in the storage type. The first versions (one
// scalar access per element) ran at about half the H100's memory bandwidth.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>

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
__device__ __forceinline__ float round_to(float v) {
  const T stored = to_type<T>(v);
  return load(&stored, 0);
}

// kVec elements moved as one aligned access where kVec * sizeof(T) is 16 bytes (the callers
// check alignment and divisibility), element by element otherwise.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
  T e[kVec];
  __device__ __forceinline__ void load(const T* p) { *this = *reinterpret_cast<const Vec*>(p); }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<Vec*>(p) = *this; }
};

// kPairs consecutive pairs per thread (one 16-byte access for bf16 when kPairs = 4). Element
// offset of pair k is 2k; its row is 2k / width and its position (row / heads) % positions.
template <typename T, int kPairs>
__global__ void rotary_kernel(const T* __restrict__ x, T* out, const float* __restrict__ cos,
                              const float* __restrict__ sin, int64_t groups, int64_t positions, int64_t heads,
                              int64_t half, float sin_sign) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < groups;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k0 = v * kPairs;       // first pair of this thread
    const int64_t row = k0 / half;       // kPairs divides half: the pairs share a row
    const int64_t i0 = k0 - row * half;  // frequency index of the first pair
    const int64_t p = (row / heads) % positions;
    Vec<T, 2 * kPairs> in, result;
    in.load(x + 2 * k0);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) {
      const float c = cos[p * half + i0 + j];
      const float s = sin_sign * sin[p * half + i0 + j];
      const float even = load(in.e, 2 * j);
      const float odd = load(in.e, 2 * j + 1);
      result.e[2 * j] = to_type<T>(even * c - odd * s);
      result.e[2 * j + 1] = to_type<T>(even * s + odd * c);
    }
    result.store(out + 2 * k0);
  }
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// kVec elements per thread (8 bf16 = one 16-byte access per tensor); n % kVec == 0 (the caller
// picks kVec = 1 otherwise).
template <typename T, int kVec>
__global__ void swiglu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                                      int64_t groups) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < groups;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Vec<T, kVec> g, u, o;
    g.load(gate + v * kVec);
    u.load(up + v * kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float gj = load(g.e, j);
      const float act = round_to<T>(gj / (1.0f + expf(-gj)));  // silu, stored in T by the composite
      o.e[j] = to_type<T>(act * load(u.e, j));
    }
    o.store(out + v * kVec);
  }
}

template <typename T, int kVec>
__global__ void swiglu_backward_kernel(const T* __restrict__ gate, const T* __restrict__ up,
                                       const T* __restrict__ d_out, T* __restrict__ d_gate, T* __restrict__ d_up,
                                       int64_t groups) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < groups;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Vec<T, kVec> g, u, dy, dg, du;
    g.load(gate + v * kVec);
    u.load(up + v * kVec);
    dy.load(d_out + v * kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const float gj = load(g.e, j);
      const float sig = sigmoid(gj);
      const float act = round_to<T>(gj / (1.0f + expf(-gj)));
      const float d_act = round_to<T>(load(dy.e, j) * load(u.e, j));  // the product's gradient, stored in T
      du.e[j] = to_type<T>(load(dy.e, j) * act);
      dg.e[j] = to_type<T>(d_act * sig * (1.0f + gj * (1.0f - sig)));
    }
    dg.store(d_gate + v * kVec);
    du.store(d_up + v * kVec);
  }
}

unsigned blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? (blocks > 0 ? blocks : 1) : kMaxBlocks);
}

template <typename Launch>
int dispatch(RowType type, Launch&& launch) {
  switch (type) {
    case RowType::kFloat32: launch(float{}); break;
    case RowType::kBFloat16: launch(__nv_bfloat16{}); break;
    case RowType::kFloat16: launch(__half{}); break;
    default: return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

int launch_rotary(const void* x, void* out, RowType type, const float* cos, const float* sin, int64_t rows,
                  int64_t positions, int64_t heads, int64_t width, bool inverse, runtime::CudaStream stream) {
  if (x == nullptr || out == nullptr || cos == nullptr || sin == nullptr || rows < 0 || positions <= 0 || heads <= 0 ||
      width <= 0 || width % 2 != 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const int64_t half = width / 2;
  const int64_t pairs = rows * half;
  if (pairs == 0) return 0;
  auto s = stream;
  const float sign = inverse ? -1.0f : 1.0f;
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kWide = 4;  // pairs per thread on the wide path
    const size_t wide_bytes = sizeof(T) * 2 * kWide;
    if (half % kWide == 0 && aligned(x, wide_bytes) && aligned(out, wide_bytes)) {
      const int64_t groups = pairs / kWide;
      rotary_kernel<T, kWide><<<blocks_for(groups), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out),
                                                                      cos, sin, groups, positions, heads, half, sign);
    } else {
      rotary_kernel<T, 1><<<blocks_for(pairs), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(out), cos,
                                                                 sin, pairs, positions, heads, half, sign);
    }
  });
}

namespace {

// Elementwise launches: 16 bytes per access per tensor when every pointer allows it.
template <typename Launch>
int launch_elementwise(RowType type, int64_t n, std::initializer_list<const void*> pointers, Launch&& launch) {
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kWide = static_cast<int>(16 / sizeof(T));
    bool wide = n % kWide == 0;
    for (const void* p : pointers) wide = wide && aligned(p, 16);
    if (wide) {
      launch(tag, std::integral_constant<int, kWide>{}, n / kWide);
    } else {
      launch(tag, std::integral_constant<int, 1>{}, n);
    }
  });
}

}  // namespace

int launch_swiglu_forward(const void* gate, const void* up, void* out, RowType type, int64_t n,
                          runtime::CudaStream stream) {
  if (gate == nullptr || up == nullptr || out == nullptr || n < 0) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return 0;
  auto s = stream;
  return launch_elementwise(type, n, {gate, up, out}, [&](auto tag, auto vec, int64_t groups) {
    using T = decltype(tag);
    swiglu_forward_kernel<T, decltype(vec)::value><<<blocks_for(groups), kThreads, 0, s>>>(
        static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(out), groups);
  });
}

int launch_swiglu_backward(const void* gate, const void* up, const void* d_out, void* d_gate, void* d_up, RowType type,
                           int64_t n, runtime::CudaStream stream) {
  if (gate == nullptr || up == nullptr || d_out == nullptr || d_gate == nullptr || d_up == nullptr || n < 0) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (n == 0) return 0;
  auto s = stream;
  return launch_elementwise(type, n, {gate, up, d_out, d_gate, d_up}, [&](auto tag, auto vec, int64_t groups) {
    using T = decltype(tag);
    swiglu_backward_kernel<T, decltype(vec)::value><<<blocks_for(groups), kThreads, 0, s>>>(
        static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<const T*>(d_out), static_cast<T*>(d_gate),
        static_cast<T*>(d_up), groups);
  });
}

}  // namespace tandem::model::kernels
