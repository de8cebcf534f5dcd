// augment.cu: BYOL's augmentations on the GPU (Backend::augment). The arithmetic is the stage
// functions of core/augment_math.h, the CPU kernel's own per-pixel code; these kernels only index.
// Convention: params (N structs) and the blur taps are device copies; `out` holds each sample's
// image between the stages (crop, then color in place) and its normalized result at the end;
// blur_scratch holds the horizontal blur pass. Contrast's channel sums are double, reduced in a
// fixed order (no atomics), so a run gives the same bits every time; they may round differently
// from the CPU's sequential sums (see augment/cuda_vs_cpu@cuda for what that allows).
#include "../../core/augment_math.h"
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

#include <algorithm>
#include <cstring>

namespace byol {
namespace cuda {
namespace {

namespace am = augment_math;

// One thread per output pixel: resized crop, flip and the jitter ops ordered before contrast.
// C is a template argument so the per-pixel arrays of augment_math stay in registers.
template <int C>
__global__ void augment_crop_kernel(float* out, const uint8_t* images, const AugmentParams* params, int N, int H,
                                    int W, int out_h, int out_w) {
  __shared__ float to_unit[256];
  for (int v = threadIdx.x; v < 256; v += blockDim.x) to_unit[v] = am::unit_value(v);
  __syncthreads();
  const int64_t pixels = int64_t(out_h) * out_w, total = pixels * N, image_size = int64_t(H) * W * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / pixels;
    const int r = static_cast<int>(i - n * pixels);
    am::crop_stage(out + n * pixels * C, images + n * image_size, params[n], r / out_w, r % out_w, H, W, C, out_h,
                   out_w, to_unit);
  }
}

// means[3n + c]: the channel means contrast blends with, one block per sample with jitter.
// Per-thread double sums over a fixed pixel stride, then warp shuffles and the warps in order.
template <int C>
__global__ void augment_channel_means_kernel(float* means, const float* img, const AugmentParams* params, int N,
                                             int64_t pixels) {
  __shared__ double warp_sums[C][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int n = blockIdx.x; n < N; n += gridDim.x) {
    if (!params[n].jitter) continue;  // the same for the whole block
    const float* x = img + int64_t(n) * pixels * C;
    double sum[C];
    for (int c = 0; c < C; ++c) sum[c] = 0.0;
    for (int64_t i = threadIdx.x; i < pixels; i += blockDim.x)
      for (int c = 0; c < C; ++c) sum[c] += x[i * C + c];
    for (int c = 0; c < C; ++c) {
      for (int offset = 16; offset > 0; offset >>= 1) sum[c] += __shfl_xor_sync(0xffffffffu, sum[c], offset);
      if (lane == 0) warp_sums[c][warp] = sum[c];
    }
    __syncthreads();
    if (threadIdx.x < C) {
      double total = 0.0;
      for (int w = 0; w < warps; ++w) total += warp_sums[threadIdx.x][w];
      means[3 * int64_t(n) + threadIdx.x] = am::contrast_mean(total, pixels);
    }
    __syncthreads();  // warp_sums is reused by the next sample
  }
}

// One thread per pixel, in place: contrast and the jitter ops after it, grayscale, then
// normalization for samples without blur.
template <int C>
__global__ void augment_color_kernel(float* out, const AugmentParams* params, const float* means, int N,
                                     int64_t pixels) {
  const int64_t total = pixels * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / pixels;
    am::color_stage(out + i * C, params[n], C, means + 3 * n);
  }
}

// Element (n, y, x, c) of a sample with blur -> (n, y, x, c).
struct BlurElement {
  int64_t n;
  int y, x, c;
};
__device__ __forceinline__ BlurElement blur_element(int64_t e, int64_t per_sample, int out_w, int C) {
  BlurElement b;
  b.n = e / per_sample;
  const int r = static_cast<int>(e - b.n * per_sample);
  b.c = r % C;
  b.x = (r / C) % out_w;
  b.y = r / C / out_w;
  return b;
}

// taps + n * taps_stride holds sample n's blur_size_h vertical taps, then its blur_size_w
// horizontal ones.
template <int C>
__global__ void augment_blur_rows_kernel(float* rows, const float* img, const AugmentParams* params,
                                         const float* taps, int taps_stride, int N, int out_h, int out_w) {
  const int64_t per_sample = int64_t(out_h) * out_w * C, total = per_sample * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const BlurElement b = blur_element(e, per_sample, out_w, C);
    const AugmentParams& p = params[b.n];
    if (!p.blur) continue;
    const float* wx = taps + b.n * taps_stride + p.blur_size_h;
    rows[e] = am::blur_rows_stage(img + b.n * per_sample, wx, p.blur_size_w, b.y, b.x, b.c, out_w, C);
  }
}

template <int C>
__global__ void augment_blur_columns_kernel(float* out, const float* rows, const AugmentParams* params,
                                            const float* taps, int taps_stride, int N, int out_h, int out_w) {
  const int64_t per_sample = int64_t(out_h) * out_w * C, total = per_sample * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const BlurElement b = blur_element(e, per_sample, out_w, C);
    const AugmentParams& p = params[b.n];
    if (!p.blur) continue;
    const float* wy = taps + b.n * taps_stride;
    out[e] = am::blur_columns_stage(rows + b.n * per_sample, wy, p, b.y, b.x, b.c, out_h, out_w, C);
  }
}

template <int C>
void launch_augment(float* out, float* means, float* blur_scratch, const uint8_t* images,
                    const AugmentParams* params, const float* blur_taps, int taps_stride, int N, int H, int W,
                    int out_h, int out_w, bool any_jitter, bool any_blur, cudaStream_t stream) {
  const int64_t pixels = int64_t(out_h) * out_w;
  const size_t total_pixels = size_t(pixels) * N, total_elements = total_pixels * C;
  augment_crop_kernel<C><<<grid_for(total_pixels), kThreads, 0, stream>>>(out, images, params, N, H, W, out_h, out_w);
  BYOL_CUDA_CHECK_LAUNCH();
  if (any_jitter) {
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(N, kMaxBlocks));
    augment_channel_means_kernel<C><<<blocks, kThreads, 0, stream>>>(means, out, params, N, pixels);
    BYOL_CUDA_CHECK_LAUNCH();
  }
  augment_color_kernel<C><<<grid_for(total_pixels), kThreads, 0, stream>>>(out, params, means, N, pixels);
  BYOL_CUDA_CHECK_LAUNCH();
  if (any_blur) {
    augment_blur_rows_kernel<C><<<grid_for(total_elements), kThreads, 0, stream>>>(
        blur_scratch, out, params, blur_taps, taps_stride, N, out_h, out_w);
    BYOL_CUDA_CHECK_LAUNCH();
    augment_blur_columns_kernel<C><<<grid_for(total_elements), kThreads, 0, stream>>>(
        out, blur_scratch, params, blur_taps, taps_stride, N, out_h, out_w);
    BYOL_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

AugmentArgs augment_args(const AugmentParams* params, int N) {
  AugmentArgs a;
  for (int n = 0; n < N; ++n) {
    a.any_jitter = a.any_jitter || params[n].jitter;
    if (params[n].blur) {
      a.any_blur = true;
      a.taps_stride = std::max(a.taps_stride, params[n].blur_size_h + params[n].blur_size_w);
    }
  }
  a.params_bytes = size_t(N) * sizeof(AugmentParams);
  a.staged_bytes = a.params_bytes + size_t(N) * a.taps_stride * sizeof(float);
  a.total_bytes = a.staged_bytes + size_t(N) * 3 * sizeof(float);
  return a;
}

void stage_augment_args(void* host, const AugmentParams* params, int N, const AugmentArgs& args) {
  char* bytes = static_cast<char*>(host);
  std::memcpy(bytes, params, args.params_bytes);
  float* taps = reinterpret_cast<float*>(bytes + args.params_bytes);
  std::memset(taps, 0, args.staged_bytes - args.params_bytes);
  for (int n = 0; n < N; ++n) {
    const AugmentParams& p = params[n];
    if (!p.blur) continue;
    float* row = taps + size_t(n) * args.taps_stride;
    am::gaussian_taps(row, p.blur_size_h, p.blur_sigma);
    am::gaussian_taps(row + p.blur_size_h, p.blur_size_w, p.blur_sigma);
  }
}

void augment(float* out, float* means, float* blur_scratch, const uint8_t* images, const AugmentParams* params,
             const float* blur_taps, int taps_stride, int N, int H, int W, int C, int out_h, int out_w,
             bool any_jitter, bool any_blur, cudaStream_t stream) {
  if (C == 3)
    launch_augment<3>(out, means, blur_scratch, images, params, blur_taps, taps_stride, N, H, W, out_h, out_w,
                      any_jitter, any_blur, stream);
  else
    launch_augment<1>(out, means, blur_scratch, images, params, blur_taps, taps_stride, N, H, W, out_h, out_w,
                      any_jitter, any_blur, stream);
}

}  // namespace cuda
}  // namespace byol
