// common.cuh: launch-size helpers and deterministic block reductions for kernels/*.cu.
// Contract: reductions combine values in a fixed order (no atomics), so a kernel gives the
// same bits on every run; every launcher sizes grids with these helpers.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace byol {
namespace cuda {

constexpr int kThreads = 256;
// Grid-stride kernels need no more blocks than fill the GPU a few times over.
constexpr int64_t kMaxBlocks = 8192;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline unsigned grid_for(size_t n, int threads = kThreads) {
  int64_t blocks = ceil_div(static_cast<int64_t>(n), threads);
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<unsigned>(blocks);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over a 1-D block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `shared` holds 32 floats. Ends with a barrier so `shared` may be reused right after.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = lane < warps ? shared[lane] : 0.0f;
  total = warp_sum(total);
  __syncthreads();
  return total;
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float best = lane < warps ? shared[lane] : -INFINITY;
  best = warp_max(best);
  __syncthreads();
  return best;
}

}  // namespace cuda
}  // namespace byol
