// See adamw_kernels.h. Both kernels walk a table of up to kSegmentsPerLaunch segments cut into
// chunks of kChunk elements: block b takes chunks b, b + grid, ... (grid-stride), finds the
// chunk's segment by scanning the table's prefix of chunk counts, and reads it as float4 where
// every pointer of the segment is 16-byte aligned (the host peels off a misaligned head so that
// this holds whenever the pointers share their misalignment), element by element otherwise.
// The sum of squares always runs kNormBlocks blocks: a fixed grid gives each block a fixed set of
// chunks, each thread a fixed order, and the reductions a fixed tree, hence the same bits.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "parallel/kernels/adamw_kernels.h"

namespace tandem::parallel::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kChunk = 4 * 4 * kThreads;  // elements per chunk: 4 float4 per thread
constexpr int kSegmentsPerLaunch = 32;        // keeps the parameter block under 4 KiB
constexpr int64_t kMaxBlocks = 8192;          // AdamW: grid-stride beyond this many chunks
constexpr int kNormBlocks = 1024;             // fixed, for determinism (partials in scratch)

// Everything a launch needs, passed by value as the kernel's parameters.
template <typename Segment>
struct SegmentTable {
  Segment segments[kSegmentsPerLaunch];
  int64_t first_chunk[kSegmentsPerLaunch + 1];  // prefix sums of the segments' chunk counts
  int num_segments = 0;
  __host__ __device__ int64_t total_chunks() const { return first_chunk[num_segments]; }
};

template <typename Segment>
__device__ __forceinline__ int segment_of(const SegmentTable<Segment>& table, int64_t chunk) {
  int s = 0;
  while (s + 1 < table.num_segments && table.first_chunk[s + 1] <= chunk) ++s;
  return s;
}

__host__ __device__ inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ bool vectorizable(const AdamWSegment& s) {
  return aligned16(s.param) && aligned16(s.grad) && aligned16(s.exp_avg) && aligned16(s.exp_avg_sq);
}
__device__ __forceinline__ bool vectorizable(const FloatSegment& s) { return aligned16(s.data); }

__device__ __forceinline__ void adamw_quad(float4& p, const float4& g, float4& m, float4& v, bool decay,
                                           const AdamWScalars& s) {
  adamw_element(p.x, g.x, m.x, v.x, decay, s);
  adamw_element(p.y, g.y, m.y, v.y, decay, s);
  adamw_element(p.z, g.z, m.z, v.z, decay, s);
  adamw_element(p.w, g.w, m.w, v.w, decay, s);
}

// Calls quad(segment, i) for every aligned group of 4 elements [i, i + 4) of the block's chunks
// where the segment is vectorizable, element(segment, i) for every other element; each thread
// visits a fixed set of indices in a fixed order.
template <typename Segment, typename Quad, typename Element>
__device__ __forceinline__ void for_each_of_block(const SegmentTable<Segment>& table, Quad&& quad, Element&& element) {
  for (int64_t chunk = blockIdx.x; chunk < table.total_chunks(); chunk += gridDim.x) {
    const int index = segment_of(table, chunk);
    const Segment seg = table.segments[index];
    const int64_t begin = (chunk - table.first_chunk[index]) * kChunk;
    const int64_t end = min(begin + kChunk, seg.numel);
    int64_t scalar_begin = begin;
    if (vectorizable(seg)) {
      const int64_t quads_end = begin + (end - begin) / 4 * 4;
      for (int64_t i = begin + 4 * threadIdx.x; i < quads_end; i += 4 * kThreads) quad(seg, i);
      scalar_begin = quads_end;
    }
    for (int64_t i = scalar_begin + threadIdx.x; i < end; i += kThreads) element(seg, i);
  }
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const SegmentTable<AdamWSegment> table, const AdamWScalars s) {
  for_each_of_block(
      table,
      [&](const AdamWSegment& seg, int64_t i) {
        float4 p = *reinterpret_cast<const float4*>(seg.param + i);
        const float4 g = *reinterpret_cast<const float4*>(seg.grad + i);
        float4 m = *reinterpret_cast<const float4*>(seg.exp_avg + i);
        float4 v = *reinterpret_cast<const float4*>(seg.exp_avg_sq + i);
        adamw_quad(p, g, m, v, seg.decay, s);
        *reinterpret_cast<float4*>(seg.param + i) = p;
        *reinterpret_cast<float4*>(seg.exp_avg + i) = m;
        *reinterpret_cast<float4*>(seg.exp_avg_sq + i) = v;
      },
      [&](const AdamWSegment& seg, int64_t i) {
        adamw_element(seg.param[i], seg.grad[i], seg.exp_avg[i], seg.exp_avg_sq[i], seg.decay, s);
      });
}

__device__ __forceinline__ double square(float x) {
  const double d = x;
  return d * d;  // exact: a float's square fits a double's mantissa
}

// The block's total of `value` over its threads, valid in thread 0; a fixed shuffle tree.
__device__ double block_sum(double value) {
  __shared__ double warp_sums[kThreads / kWarp];
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  value = threadIdx.x < kThreads / kWarp ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  __syncthreads();  // warp_sums may be reused by the next call
  return value;
}

// partials[block] (+)= this block's sum of squares over its chunks of the table.
__global__ void __launch_bounds__(kThreads)
    sum_squares_kernel(const SegmentTable<FloatSegment> table, double* partials, bool accumulate) {
  double acc = 0.0;
  for_each_of_block(
      table,
      [&](const FloatSegment& seg, int64_t i) {
        const float4 x = *reinterpret_cast<const float4*>(seg.data + i);
        acc += square(x.x) + square(x.y) + square(x.z) + square(x.w);
      },
      [&](const FloatSegment& seg, int64_t i) { acc += square(seg.data[i]); });
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = accumulate ? partials[blockIdx.x] + total : total;
}

__global__ void __launch_bounds__(kThreads) sum_partials_kernel(const double* partials, double* out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < kNormBlocks; i += kThreads) acc += partials[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = total;
}

// Elements of a misaligned start to peel off so that `p` becomes 16-byte aligned (0..3).
int64_t head_to_alignment(const float* p) {
  const uintptr_t misaligned = reinterpret_cast<uintptr_t>(p) % 16;
  return misaligned == 0 || misaligned % sizeof(float) != 0 ? 0 : static_cast<int64_t>((16 - misaligned) / 4);
}

AdamWSegment advanced(AdamWSegment s, int64_t by) {
  s.param += by;
  s.grad += by;
  s.exp_avg += by;
  s.exp_avg_sq += by;
  s.numel -= by;
  return s;
}
FloatSegment advanced(FloatSegment s, int64_t by) {
  s.data += by;
  s.numel -= by;
  return s;
}
const float* base_of(const AdamWSegment& s) { return s.param; }
const float* base_of(const FloatSegment& s) { return s.data; }

// Fills tables of at most kSegmentsPerLaunch segments and hands each full one to `launch`;
// a segment's misaligned head (when the body then aligns) becomes a segment of its own.
template <typename Segment, typename Launch>
int for_each_table(const Segment* segments, int64_t num_segments, Launch&& launch) {
  SegmentTable<Segment> table;
  table.first_chunk[0] = 0;
  auto add = [&](const Segment& seg) -> int {
    if (seg.numel <= 0) return 0;
    const int n = table.num_segments;
    table.segments[n] = seg;
    table.first_chunk[n + 1] = table.first_chunk[n] + (seg.numel + kChunk - 1) / kChunk;
    table.num_segments = n + 1;
    if (table.num_segments < kSegmentsPerLaunch) return 0;
    const int status = launch(table);
    table.num_segments = 0;
    return status;
  };
  for (int64_t i = 0; i < num_segments; ++i) {
    const Segment& seg = segments[i];
    const int64_t head = std::min(head_to_alignment(base_of(seg)), seg.numel);
    Segment first = seg;
    first.numel = head;
    if (const int status = add(first); status != 0) return status;
    if (const int status = add(advanced(seg, head)); status != 0) return status;
  }
  return table.num_segments > 0 ? launch(table) : 0;
}

bool valid(const AdamWSegment& s) {
  return s.numel == 0 || (s.numel > 0 && s.param && s.grad && s.exp_avg && s.exp_avg_sq);
}
bool valid(const FloatSegment& s) { return s.numel == 0 || (s.numel > 0 && s.data); }

}  // namespace

int launch_adamw_segments(const AdamWSegment* segments, int64_t num_segments, const AdamWScalars& scalars,
                          runtime::CudaStream stream) {
  if (num_segments < 0 || (num_segments > 0 && segments == nullptr)) return static_cast<int>(cudaErrorInvalidValue);
  if (!std::all_of(segments, segments + num_segments, [](const AdamWSegment& s) { return valid(s); })) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const auto s = stream;
  return for_each_table(segments, num_segments, [&](const SegmentTable<AdamWSegment>& table) {
    const int64_t blocks = std::min(table.total_chunks(), kMaxBlocks);
    adamw_kernel<<<static_cast<int>(blocks), kThreads, 0, s>>>(table, scalars);
    return static_cast<int>(cudaGetLastError());
  });
}

int64_t sum_squares_scratch_numel() { return kNormBlocks; }

int launch_sum_squares(const FloatSegment* segments, int64_t num_segments, double* scratch, double* out,
                       runtime::CudaStream stream) {
  if (num_segments < 0 || (num_segments > 0 && segments == nullptr) || scratch == nullptr || out == nullptr) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  if (!std::all_of(segments, segments + num_segments, [](const FloatSegment& s) { return valid(s); })) {
    return static_cast<int>(cudaErrorInvalidValue);
  }
  const auto s = stream;
  bool accumulate = false;
  const int status = for_each_table(segments, num_segments, [&](const SegmentTable<FloatSegment>& table) {
    sum_squares_kernel<<<kNormBlocks, kThreads, 0, s>>>(table, scratch, accumulate);
    accumulate = true;
    return static_cast<int>(cudaGetLastError());
  });
  if (status != 0) return status;
  if (!accumulate) return static_cast<int>(cudaMemsetAsync(out, 0, sizeof(double), s));  // nothing to add
  sum_partials_kernel<<<1, kThreads, 0, s>>>(scratch, out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace tandem::parallel::kernels
