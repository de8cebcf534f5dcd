// optim.cu: LARS, SGD and AdamW over flat parameter buffers. The per-element formulas are
// core/optim_math.h (the CPU backend runs the same functions); these kernels only index.
// Convention: params and optimizer state are updated in place, grads are read-only. Work is cut
// into OptimChunks (kernels.h) that never cross a segment: one block per chunk. LARS norms are
// double sums reduced in a fixed tree per chunk, then per segment (no atomics), so the result
// does not depend on launch timing or grid size; nothing here synchronizes with the host.
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

#include <algorithm>
#include <climits>

namespace byol {
namespace cuda {
namespace {

// Sum over a 1-D block (blockDim.x a multiple of 32, <= 1024) in a fixed order; every thread
// gets the result. `shared` holds 32 doubles. Ends with a barrier so `shared` may be reused.
__device__ __forceinline__ double block_sum_double(double v, double* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double total = lane < warps ? shared[lane] : 0.0;
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
  __syncthreads();
  return total;
}

// chunk_sums[2c], chunk_sums[2c+1] = |p|^2, |g'|^2 over chunk c, for chunks of decay segments
// (the others are never read).
__global__ void lars_chunk_sums_kernel(double* chunk_sums, const float* params, const float* grads,
                                       const OptimChunk* chunks, int num_chunks,
                                       const OptimSegment* segments, float weight_decay, bool solo_learn) {
  __shared__ double shared_p[32], shared_g[32];
  for (int c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const OptimChunk chunk = chunks[c];
    if (!segments[chunk.segment].decay) continue;  // the same for the whole block
    double sp = 0.0, sg = 0.0;
    const int64_t end = chunk.begin + chunk.size;
    for (int64_t i = chunk.begin + threadIdx.x; i < end; i += blockDim.x)
      optim::lars_norm_terms(params, grads, i, weight_decay, solo_learn, sp, sg);
    sp = block_sum_double(sp, shared_p);
    sg = block_sum_double(sg, shared_g);
    if (threadIdx.x == 0) {
      chunk_sums[2 * int64_t(c)] = sp;
      chunk_sums[2 * int64_t(c) + 1] = sg;
    }
  }
}

// scales[s] from the chunk sums of segment s (one block per segment).
__global__ void lars_segment_scales_kernel(optim::LarsScale* scales, const double* chunk_sums,
                                           const OptimSegment* segments, int num_segments, LarsOptions opt) {
  __shared__ double shared_p[32], shared_g[32];
  for (int s = blockIdx.x; s < num_segments; s += gridDim.x) {
    const OptimSegment seg = segments[s];
    double sp = 0.0, sg = 0.0;
    if (seg.decay) {
      for (int c = threadIdx.x; c < seg.num_chunks; c += blockDim.x) {
        sp += chunk_sums[2 * int64_t(seg.first_chunk + c)];
        sg += chunk_sums[2 * int64_t(seg.first_chunk + c) + 1];
      }
    }
    sp = block_sum_double(sp, shared_p);
    sg = block_sum_double(sg, shared_g);
    if (threadIdx.x == 0) scales[s] = optim::lars_segment_scale(sp, sg, seg.decay != 0, opt);
  }
}

__global__ void lars_apply_kernel(float* params, float* momentum, const float* grads, const OptimChunk* chunks,
                                  int num_chunks, const optim::LarsScale* scales, LarsOptions opt) {
  const float lr = optim::step_lr(opt);
  for (int c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const OptimChunk chunk = chunks[c];
    const optim::LarsScale scale = scales[chunk.segment];
    const int64_t end = chunk.begin + chunk.size;
    for (int64_t i = chunk.begin + threadIdx.x; i < end; i += blockDim.x)
      optim::lars_element(params, momentum, grads, i, scale, opt, lr);
  }
}

__global__ void sgd_kernel(float* params, float* momentum, const float* grads, const OptimChunk* chunks,
                           int num_chunks, const OptimSegment* segments, SgdOptions opt) {
  const float lr = optim::step_lr(opt);
  for (int c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const OptimChunk chunk = chunks[c];
    const bool decay = segments[chunk.segment].decay != 0;
    const int64_t end = chunk.begin + chunk.size;
    for (int64_t i = chunk.begin + threadIdx.x; i < end; i += blockDim.x)
      optim::sgd_element(params, momentum, grads, i, decay, opt, lr);
  }
}

__global__ void adamw_kernel(float* params, float* exp_avg, float* exp_avg_sq, const float* grads,
                             const OptimChunk* chunks, int num_chunks, const OptimSegment* segments,
                             optim::AdamWConstants constants) {
  const optim::AdamWStepConstants step = optim::adamw_step_constants(constants);
  for (int c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const OptimChunk chunk = chunks[c];
    const bool decay = segments[chunk.segment].decay != 0;
    const int64_t end = chunk.begin + chunk.size;
    for (int64_t i = chunk.begin + threadIdx.x; i < end; i += blockDim.x)
      optim::adamw_element(params, exp_avg, exp_avg_sq, grads, i, decay, constants, step);
  }
}

unsigned blocks_for(int count) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(count, kMaxBlocks)));
}

}  // namespace

void cut_segments(const ParamSegment* segments, int num_segments, std::vector<OptimChunk>* chunks,
                  std::vector<OptimSegment>* ranges) {
  chunks->clear();
  ranges->assign(static_cast<size_t>(num_segments), OptimSegment{});
  for (int s = 0; s < num_segments; ++s) {
    const ParamSegment& seg = segments[s];
    OptimSegment& range = (*ranges)[s];
    range.first_chunk = static_cast<int32_t>(chunks->size());
    range.decay = seg.decay ? 1 : 0;
    for (int64_t begin = seg.offset; begin < seg.offset + seg.size; begin += kOptimChunkFloats) {
      const int64_t size = std::min(kOptimChunkFloats, seg.offset + seg.size - begin);
      chunks->push_back({begin, static_cast<int32_t>(size), s});
    }
    BYOL_CHECK(chunks->size() <= static_cast<size_t>(INT_MAX), "cuda: ", current_op(), ": the segment table cuts into ",
               chunks->size(), " chunks of ", kOptimChunkFloats, " floats, more than the kernels index (", INT_MAX, ")");
    range.num_chunks = static_cast<int32_t>(chunks->size()) - range.first_chunk;
  }
}

size_t lars_scratch_bytes(int num_chunks, int num_segments) {
  return size_t(num_chunks) * 2 * sizeof(double) + size_t(num_segments) * sizeof(optim::LarsScale);
}

void lars_update(float* params, float* momentum, void* scratch, const float* grads, const OptimChunk* chunks,
                 int num_chunks, const OptimSegment* segments, int num_segments, const LarsOptions& opt,
                 cudaStream_t stream) {
  double* chunk_sums = static_cast<double*>(scratch);
  auto* scales = reinterpret_cast<optim::LarsScale*>(chunk_sums + 2 * size_t(num_chunks));
  lars_chunk_sums_kernel<<<blocks_for(num_chunks), kThreads, 0, stream>>>(
      chunk_sums, params, grads, chunks, num_chunks, segments, opt.weight_decay, opt.solo_learn);
  BYOL_CUDA_CHECK_LAUNCH();
  lars_segment_scales_kernel<<<blocks_for(num_segments), kThreads, 0, stream>>>(scales, chunk_sums, segments,
                                                                                num_segments, opt);
  BYOL_CUDA_CHECK_LAUNCH();
  lars_apply_kernel<<<blocks_for(num_chunks), kThreads, 0, stream>>>(params, momentum, grads, chunks, num_chunks,
                                                                     scales, opt);
  BYOL_CUDA_CHECK_LAUNCH();
}

void sgd_update(float* params, float* momentum, const float* grads, const OptimChunk* chunks, int num_chunks,
                const OptimSegment* segments, const SgdOptions& opt, cudaStream_t stream) {
  sgd_kernel<<<blocks_for(num_chunks), kThreads, 0, stream>>>(params, momentum, grads, chunks, num_chunks,
                                                              segments, opt);
  BYOL_CUDA_CHECK_LAUNCH();
}

void adamw_update(float* params, float* exp_avg, float* exp_avg_sq, const float* grads, const OptimChunk* chunks,
                  int num_chunks, const OptimSegment* segments, const optim::AdamWConstants& constants,
                  cudaStream_t stream) {
  adamw_kernel<<<blocks_for(num_chunks), kThreads, 0, stream>>>(params, exp_avg, exp_avg_sq, grads, chunks,
                                                                num_chunks, segments, constants);
  BYOL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace byol
