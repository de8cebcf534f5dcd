// elementwise.cu: fill, ReLU, add, accumulate, EMA, bias broadcast, row reductions and the
// conv weight layout transposes of the CUDA backend.
// Convention: outputs first; activation gradients are written (=); `accumulate` adds (+=)
// parameter gradients. Grid-stride loops with 64-bit indices (activations exceed 2^31).
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

namespace byol {
namespace cuda {
namespace {

__global__ void fill_kernel(float* dst, float value, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

__global__ void relu_forward_kernel(float* out, const float* inp, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float x = inp[i];
    // NaN passes through, as in PyTorch and oneDNN: a diverged step must stay visible.
    out[i] = (x > 0.0f || x != x) ? x : 0.0f;
  }
}

__global__ void relu_backward_kernel(float* dinp, const float* dout, const float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dinp[i] = out[i] > 0.0f ? dout[i] : 0.0f;
}

__global__ void add_kernel(float* out, const float* a, const float* b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void accumulate_kernel(float* dst, const float* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// weight = 1 - tau; with tau_device, tau is read from device memory (a graph replays this
// launch with the tau of its step).
__global__ void ema_update_kernel(float* target, const float* online, size_t n, float weight,
                                  const float* tau_device) {
  if (tau_device) weight = 1.0f - *tau_device;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    float t = target[i];
    target[i] = fmaf(weight, online[i] - t, t);
  }
}

__global__ void broadcast_rows_kernel(float* out, const float* bias, int B, int O) {
  size_t n = size_t(B) * O;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = bias[i % O];
}

// Block (32, 8): 32 consecutive channels per warp (coalesced), 8 row lanes; grid
// (ceil(C/32), batches capped at the grid's y limit). Row lanes are summed in a fixed order through shared memory.
__global__ void reduce_rows_kernel(float* out, const float* inp, int batches, int64_t rows, int C,
                                   float scale, bool accumulate) {
  __shared__ float partial[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  for (int64_t batch = blockIdx.y; batch < batches; batch += gridDim.y) {
    float sum = 0.0f;
    if (c < C) {
      const float* base = inp + batch * rows * C + c;
      for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) sum += base[r * C];
    }
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      float total = 0.0f;
      for (int k = 0; k < 8; ++k) total += partial[k][threadIdx.x];
      float* dst = out + batch * C + c;
      *dst = accumulate ? *dst + scale * total : scale * total;
    }
    __syncthreads();
  }
}

__global__ void oihw_to_krsc_kernel(float* dst, const float* src, int K, int C, int R, int S) {
  const size_t n = size_t(K) * C * R * S;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    // i indexes dst (k, r, s, c): writes are coalesced, reads stride by R*S.
    int c = int(i % C);
    size_t rest = i / C;
    int s = int(rest % S);
    rest /= S;
    int r = int(rest % R);
    size_t k = rest / R;
    dst[i] = src[((k * C + c) * R + r) * S + s];
  }
}

__global__ void krsc_to_oihw_kernel(float* dst, const float* src, int K, int C, int R, int S,
                                    bool accumulate) {
  const size_t n = size_t(K) * C * R * S;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    // i indexes dst (k, c, r, s).
    int s = int(i % S);
    size_t rest = i / S;
    int r = int(rest % R);
    rest /= R;
    int c = int(rest % C);
    size_t k = rest / C;
    float v = src[((k * R + r) * S + s) * C + c];
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

}  // namespace

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attributes;
  return cudaFuncGetAttributes(&attributes, fill_kernel);
}

void fill(float* dst, float value, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, value, n);
  BYOL_CUDA_CHECK_LAUNCH();
}

void relu_forward(float* out, const float* inp, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_forward_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, inp, n);
  BYOL_CUDA_CHECK_LAUNCH();
}

void relu_backward(float* dinp, const float* dout, const float* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  relu_backward_kernel<<<grid_for(n), kThreads, 0, stream>>>(dinp, dout, out, n);
  BYOL_CUDA_CHECK_LAUNCH();
}

void add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, a, b, n);
  BYOL_CUDA_CHECK_LAUNCH();
}

void accumulate(float* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  accumulate_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  BYOL_CUDA_CHECK_LAUNCH();
}

void ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device,
                cudaStream_t stream) {
  if (n == 0) return;
  ema_update_kernel<<<grid_for(n), kThreads, 0, stream>>>(target, online, n, 1.0f - tau, tau_device);
  BYOL_CUDA_CHECK_LAUNCH();
}

void broadcast_rows(float* out, const float* bias, int B, int O, cudaStream_t stream) {
  size_t n = size_t(B) * O;
  if (n == 0) return;
  broadcast_rows_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, bias, B, O);
  BYOL_CUDA_CHECK_LAUNCH();
}

void reduce_rows(float* out, const float* inp, int batches, int64_t rows, int C, float scale,
                 bool accumulate, cudaStream_t stream) {
  if (batches == 0 || C == 0) return;
  dim3 block(32, 8);
  dim3 grid(static_cast<unsigned>(ceil_div(C, 32)), static_cast<unsigned>(batches < 65535 ? batches : 65535));
  reduce_rows_kernel<<<grid, block, 0, stream>>>(out, inp, batches, rows, C, scale, accumulate);
  BYOL_CUDA_CHECK_LAUNCH();
}

void oihw_to_krsc(float* dst, const float* src, int K, int C, int R, int S, cudaStream_t stream) {
  size_t n = size_t(K) * C * R * S;
  if (n == 0) return;
  oihw_to_krsc_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, K, C, R, S);
  BYOL_CUDA_CHECK_LAUNCH();
}

void krsc_to_oihw(float* dst, const float* src, int K, int C, int R, int S, bool accumulate,
                  cudaStream_t stream) {
  size_t n = size_t(K) * C * R * S;
  if (n == 0) return;
  krsc_to_oihw_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, K, C, R, S, accumulate);
  BYOL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace byol
