// pooling.cu: max pooling (with argmax) forward/backward and the global average pool's
// backward, NHWC. (The average pool forward is reduce_rows in elementwise.cu.)
// Convention: outputs first; dinp is written (=). The max-pool backward gathers, for each
// input pixel, the outputs whose argmax chose it, instead of scattering with atomics: the
// result is deterministic and needs no zero fill.
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

namespace byol {
namespace cuda {
namespace {

// out, argmax (N, P, Q, C); inp (N, H, W, C). One thread per output element, channel
// fastest, so a warp reads 32 adjacent channels of one pixel.
__global__ void maxpool2d_forward_kernel(float* out, int32_t* argmax, const float* inp, int N,
                                         int H, int W, int C, int kernel, int stride, int pad,
                                         int P, int Q) {
  const size_t total = size_t(N) * P * Q * C;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int c = int(i % C);
    size_t rest = i / C;
    const int q = int(rest % Q);
    rest /= Q;
    const int p = int(rest % P);
    const size_t n = rest / P;
    const float* image = inp + n * H * W * C + c;
    float best = -INFINITY;
    int32_t best_index = -1;
    const int h0 = p * stride - pad, w0 = q * stride - pad;
    for (int h = h0; h < h0 + kernel; ++h) {
      if (h < 0 || h >= H) continue;
      for (int w = w0; w < w0 + kernel; ++w) {
        if (w < 0 || w >= W) continue;
        const float v = image[(size_t(h) * W + w) * C];
        // NaN wins and stays, as in PyTorch: a diverged activation must stay visible.
        if (v > best || v != v || best_index < 0) {
          best = v;
          best_index = h * W + w;
          if (v != v) break;
        }
      }
      if (best != best) break;
    }
    out[i] = best;
    argmax[i] = best_index;
  }
}

// dinp (N, H, W, C); dout, argmax (N, P, Q, C).
__global__ void maxpool2d_backward_kernel(float* dinp, const float* dout, const int32_t* argmax,
                                          int N, int H, int W, int C, int kernel, int stride,
                                          int pad, int P, int Q) {
  const size_t total = size_t(N) * H * W * C;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int c = int(i % C);
    size_t rest = i / C;
    const int w = int(rest % W);
    rest /= W;
    const int h = int(rest % H);
    const size_t n = rest / H;
    // Outputs whose window [p*stride - pad, p*stride - pad + kernel) contains h.
    const int hp = h + pad, wp = w + pad;
    const int p_begin = hp < kernel ? 0 : (hp - kernel) / stride + 1;
    const int p_end = min(P, hp / stride + 1);
    const int q_begin = wp < kernel ? 0 : (wp - kernel) / stride + 1;
    const int q_end = min(Q, wp / stride + 1);
    const int32_t self = h * W + w;
    float grad = 0.0f;
    for (int p = p_begin; p < p_end; ++p)
      for (int q = q_begin; q < q_end; ++q) {
        const size_t o = ((n * P + p) * Q + q) * C + c;
        if (argmax[o] == self) grad += dout[o];
      }
    dinp[i] = grad;
  }
}

// dinp (N, HW, C) = dout (N, C) / HW.
__global__ void avgpool_backward_kernel(float* dinp, const float* dout, int N, int HW, int C) {
  const size_t total = size_t(N) * HW * C;
  const float scale = 1.0f / float(HW);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int c = int(i % C);
    const size_t n = i / (size_t(HW) * C);
    dinp[i] = dout[n * C + c] * scale;
  }
}

}  // namespace

void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, int N, int H, int W, int C,
                       int kernel, int stride, int pad, int P, int Q, cudaStream_t stream) {
  const size_t total = size_t(N) * P * Q * C;
  if (total == 0) return;
  maxpool2d_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(out, argmax, inp, N, H, W, C,
                                                                     kernel, stride, pad, P, Q);
  BYOL_CUDA_CHECK_LAUNCH();
}

void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, int N, int H,
                        int W, int C, int kernel, int stride, int pad, int P, int Q,
                        cudaStream_t stream) {
  const size_t total = size_t(N) * H * W * C;
  if (total == 0) return;
  maxpool2d_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(
      dinp, dout, argmax, N, H, W, C, kernel, stride, pad, P, Q);
  BYOL_CUDA_CHECK_LAUNCH();
}

void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C, cudaStream_t stream) {
  const size_t total = size_t(N) * HW * C;
  if (total == 0) return;
  avgpool_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(dinp, dout, N, HW, C);
  BYOL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace byol
