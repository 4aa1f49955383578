// See moe_kernels.h. Routing: one warp per token, its selection scores and group scores in shared
// memory, each pick a warp-wide argmax (ties to the lower index). Permute: one block per row,
// copying in the widest vector the row size and alignment allow. Combine: one block per expert
// row, fp32 atomic adds into the token row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "model/kernels/moe_kernels.h"

namespace tandem::model::kernels {
namespace {

constexpr int kWarp = 32;
constexpr int kRoutingWarpsPerBlock = 4;
constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 32;   // kept groups are a 32-bit mask
constexpr int kMaxTopK = kWarp;  // lane k holds pick k
constexpr int kRowThreads = 128;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride beyond this

struct Best {
  float value;
  int index;
};

__device__ __forceinline__ Best better(Best a, Best b) {
  return (a.value > b.value || (a.value == b.value && a.index < b.index)) ? a : b;
}

// The largest of values[0, count) (lowest index among equals), known to every lane of the warp.
__device__ Best warp_argmax(const float* values, int count, int lane) {
  Best best{-INFINITY, INT32_MAX};
  for (int i = lane; i < count; i += kWarp) best = better(best, Best{values[i], i});
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const Best other{__shfl_xor_sync(0xffffffffu, best.value, offset),
                     __shfl_xor_sync(0xffffffffu, best.index, offset)};
    best = better(best, other);
  }
  return best;
}

__global__ void routing_topk_kernel(const float* __restrict__ scores, const float* __restrict__ bias,
                                    int64_t* __restrict__ topk_idx, float* __restrict__ topk_weight, RoutingShape s) {
  extern __shared__ float shared[];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  float* selection = shared + warp * (s.num_experts + s.n_group);  // [E]
  float* group_score = selection + s.num_experts;                  // [G]
  const int per_group = s.num_experts / s.n_group;
  for (int64_t token = static_cast<int64_t>(blockIdx.x) * kRoutingWarpsPerBlock + warp; token < s.num_tokens;
       token += static_cast<int64_t>(gridDim.x) * kRoutingWarpsPerBlock) {
    const float* row = scores + token * s.num_experts;
    for (int e = lane; e < s.num_experts; e += kWarp) selection[e] = row[e] + (bias != nullptr ? bias[e] : 0.0f);
    __syncwarp();
    if (s.topk_group < s.n_group) {
      // A group's score: the sum of its two best selection values (its one value if it has one).
      for (int g = lane; g < s.n_group; g += kWarp) {
        float first = -INFINITY, second = -INFINITY;
        for (int j = 0; j < per_group; ++j) {
          const float v = selection[g * per_group + j];
          if (v > first) {
            second = first;
            first = v;
          } else if (v > second) {
            second = v;
          }
        }
        group_score[g] = per_group >= 2 ? first + second : first;
      }
      __syncwarp();
      uint32_t kept = 0;
      for (int pick = 0; pick < s.topk_group; ++pick) {
        const Best best = warp_argmax(group_score, s.n_group, lane);
        kept |= 1u << best.index;
        __syncwarp();
        if (lane == 0) group_score[best.index] = -INFINITY;
        __syncwarp();
      }
      for (int e = lane; e < s.num_experts; e += kWarp) {
        if (((kept >> (e / per_group)) & 1u) == 0) selection[e] = -INFINITY;
      }
      __syncwarp();
    }
    int chosen = 0;  // lane k keeps pick k
    for (int pick = 0; pick < s.top_k; ++pick) {
      const Best best = warp_argmax(selection, s.num_experts, lane);
      if (lane == pick) chosen = best.index;
      __syncwarp();
      if (lane == 0) selection[best.index] = -INFINITY;
      __syncwarp();
    }
    // Gate values from the unbiased scores of the chosen experts.
    const float gate = lane < s.top_k ? row[chosen] : 0.0f;
    float total = gate;
    for (int offset = kWarp / 2; offset > 0; offset /= 2) total += __shfl_xor_sync(0xffffffffu, total, offset);
    if (lane < s.top_k) {
      const float normalised = s.norm_topk_prob ? gate / (total + 1e-20f) : gate;
      topk_idx[token * s.top_k + lane] = chosen;
      topk_weight[token * s.top_k + lane] = normalised * s.routed_scaling_factor;
    }
    __syncwarp();
  }
}

template <typename Vector>
__global__ void permute_rows_kernel(const Vector* __restrict__ in, const int64_t* __restrict__ token_index,
                                    Vector* __restrict__ out, int64_t num_rows, int64_t row_vectors) {
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const Vector* source = in + token_index[r] * row_vectors;
    Vector* target = out + r * row_vectors;
    for (int64_t i = threadIdx.x; i < row_vectors; i += blockDim.x) target[i] = source[i];
  }
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__global__ void unpermute_combine_kernel(const T* __restrict__ rows, const float* __restrict__ gate,
                                         const int64_t* __restrict__ token_index, float* __restrict__ out,
                                         int64_t num_rows, int64_t hidden) {
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const float weight = gate != nullptr ? gate[r] : 1.0f;
    const T* source = rows + r * hidden;
    float* target = out + token_index[r] * hidden;
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) atomicAdd(target + c, weight * to_float(source[c]));
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half(v);
}

// One block per expert row: the scaled token gradient out, the dot product with the row reduced
// over the block (warp shuffles, then one partial per warp).
template <typename T>
__global__ void unpermute_combine_backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ rows,
                                                  const float* __restrict__ gate,
                                                  const int64_t* __restrict__ token_index, T* __restrict__ grad_rows,
                                                  float* __restrict__ grad_gate, int64_t num_rows, int64_t hidden) {
  __shared__ float partial[kRowThreads / kWarp];
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const float weight = gate[r];
    const T* upstream = grad_out + token_index[r] * hidden;
    const T* row = rows + r * hidden;
    T* target = grad_rows + r * hidden;
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
      const float g = to_float(upstream[c]);
      target[c] = from_float<T>(weight * g);
      dot += g * to_float(row[c]);
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    if (lane == 0) partial[warp] = dot;
    __syncthreads();
    if (threadIdx.x == 0) {
      float total = 0.0f;
      for (int w = 0; w < kRowThreads / kWarp; ++w) total += partial[w];
      grad_gate[r] = total;
    }
    __syncthreads();  // `partial` is reused by the next row
  }
}

int grid_for(int64_t items) { return static_cast<int>(items < kMaxBlocks ? items : kMaxBlocks); }

template <typename Vector>
int launch_permute_as(const void* in, const int64_t* token_index, void* out, int64_t num_rows, int64_t row_bytes,
                      cudaStream_t stream) {
  permute_rows_kernel<Vector><<<grid_for(num_rows), kRowThreads, 0, stream>>>(
      static_cast<const Vector*>(in), token_index, static_cast<Vector*>(out), num_rows,
      row_bytes / static_cast<int64_t>(sizeof(Vector)));
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_combine_as(const void* rows, const float* gate, const int64_t* token_index, float* out, int64_t num_rows,
                      int64_t hidden, cudaStream_t stream) {
  unpermute_combine_kernel<T><<<grid_for(num_rows), kRowThreads, 0, stream>>>(static_cast<const T*>(rows), gate,
                                                                              token_index, out, num_rows, hidden);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_combine_backward_as(const void* grad_out, const void* rows, const float* gate, const int64_t* token_index,
                               void* grad_rows, float* grad_gate, int64_t num_rows, int64_t hidden,
                               cudaStream_t stream) {
  unpermute_combine_backward_kernel<T><<<grid_for(num_rows), kRowThreads, 0, stream>>>(
      static_cast<const T*>(grad_out), static_cast<const T*>(rows), gate, token_index, static_cast<T*>(grad_rows),
      grad_gate, num_rows, hidden);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_routing_topk(const float* scores, const float* bias, int64_t* topk_idx, float* topk_weight,
                        const RoutingShape& shape, runtime::CudaStream stream) {
  const RoutingShape& s = shape;
  const bool valid = s.num_tokens >= 0 && s.num_experts > 0 && s.num_experts <= kMaxExperts && s.n_group > 0 &&
                     s.n_group <= kMaxGroups && s.num_experts % s.n_group == 0 && s.topk_group > 0 &&
                     s.topk_group <= s.n_group && s.top_k > 0 && s.top_k <= kMaxTopK &&
                     s.top_k <= s.topk_group * (s.num_experts / s.n_group);
  if (!valid) return static_cast<int>(cudaErrorInvalidValue);
  if (s.num_tokens == 0) return static_cast<int>(cudaSuccess);
  const int64_t blocks = (s.num_tokens + kRoutingWarpsPerBlock - 1) / kRoutingWarpsPerBlock;
  const size_t shared_bytes = sizeof(float) * kRoutingWarpsPerBlock * (s.num_experts + s.n_group);
  routing_topk_kernel<<<grid_for(blocks), kRoutingWarpsPerBlock * kWarp, shared_bytes, stream>>>(scores, bias, topk_idx,
                                                                                                 topk_weight, s);
  return static_cast<int>(cudaGetLastError());
}

int launch_permute_rows(const void* in, const int64_t* token_index, void* out, int64_t num_rows, int64_t row_bytes,
                        runtime::CudaStream stream) {
  if (num_rows < 0 || row_bytes < 0) return static_cast<int>(cudaErrorInvalidValue);
  if (num_rows == 0 || row_bytes == 0) return static_cast<int>(cudaSuccess);
  const auto s = stream;
  // The widest unit that divides the row and both base addresses (rows then stay aligned too).
  const auto fits = [&](int64_t width) {
    return row_bytes % width == 0 && reinterpret_cast<uintptr_t>(in) % width == 0 &&
           reinterpret_cast<uintptr_t>(out) % width == 0;
  };
  if (fits(16)) return launch_permute_as<uint4>(in, token_index, out, num_rows, row_bytes, s);
  if (fits(8)) return launch_permute_as<uint2>(in, token_index, out, num_rows, row_bytes, s);
  if (fits(4)) return launch_permute_as<uint32_t>(in, token_index, out, num_rows, row_bytes, s);
  if (fits(2)) return launch_permute_as<uint16_t>(in, token_index, out, num_rows, row_bytes, s);
  return launch_permute_as<uint8_t>(in, token_index, out, num_rows, row_bytes, s);
}

int launch_unpermute_combine(const void* rows, RowType type, const float* gate, const int64_t* token_index, float* out,
                             int64_t num_rows, int64_t hidden, runtime::CudaStream stream) {
  if (num_rows < 0 || hidden < 0) return static_cast<int>(cudaErrorInvalidValue);
  if (num_rows == 0 || hidden == 0) return static_cast<int>(cudaSuccess);
  const auto s = stream;
  switch (type) {
    case RowType::kFloat32: return launch_combine_as<float>(rows, gate, token_index, out, num_rows, hidden, s);
    case RowType::kBFloat16: return launch_combine_as<__nv_bfloat16>(rows, gate, token_index, out, num_rows, hidden, s);
    case RowType::kFloat16: return launch_combine_as<__half>(rows, gate, token_index, out, num_rows, hidden, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int launch_unpermute_combine_backward(const void* grad_out, const void* rows, RowType type, const float* gate,
                                      const int64_t* token_index, void* grad_rows, float* grad_gate, int64_t num_rows,
                                      int64_t hidden, runtime::CudaStream stream) {
  if (num_rows < 0 || hidden < 0 || gate == nullptr) return static_cast<int>(cudaErrorInvalidValue);
  if (num_rows == 0) return static_cast<int>(cudaSuccess);
  const auto s = stream;
  switch (type) {
    case RowType::kFloat32:
      return launch_combine_backward_as<float>(grad_out, rows, gate, token_index, grad_rows, grad_gate, num_rows,
                                               hidden, s);
    case RowType::kBFloat16:
      return launch_combine_backward_as<__nv_bfloat16>(grad_out, rows, gate, token_index, grad_rows, grad_gate,
                                                       num_rows, hidden, s);
    case RowType::kFloat16:
      return launch_combine_backward_as<__half>(grad_out, rows, gate, token_index, grad_rows, grad_gate, num_rows,
                                                hidden, s);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace tandem::model::kernels
