// batchnorm.cu: batch norm over rows of x (M, C) with channels contiguous (NHWC, or the
// (B, C) input of BatchNorm1d): training forward, eval forward, backward.
// Convention: outputs first; dinp is written (=); dgamma/dbeta are added when `accumulate`.
// Per-channel reductions use a 2-D grid: blockIdx.x picks 32 adjacent channels (one warp
// reads 128 contiguous bytes), blockIdx.y one chunk of rows. Chunks write partial results
// that a second kernel merges in chunk order, so results are deterministic (no atomics).
// Statistics: each thread sums its rows about a shift (one read of x, no E[x^2]-E[x]^2
// cancellation), lanes and chunks merge with Chan's formula, across chunks in double. A
// thread's work on its rows is in batchnorm_rows.h (loads batched kUnroll rows ahead, so enough
// bytes are in flight for the memory system).
#include <algorithm>

#include "batchnorm_rows.h"
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

namespace byol {
namespace cuda {
namespace {

namespace rows = byol::batchnorm_rows;

constexpr int kRowLanes = 8;  // blockDim.y of the reduction kernels

// partial_mean/partial_m2 are (chunks, C): mean and sum of squared deviations of the chunk's
// rows.
__global__ void batchnorm_stats_kernel(float* partial_mean, float* partial_m2, const float* inp,
                                       int64_t M, int C, int64_t rows_per_chunk) {
  __shared__ float s_count[kRowLanes][33], s_mean[kRowLanes][33], s_m2[kRowLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < M ? begin + rows_per_chunk : M;
  rows::ShiftedMoments moments;
  if (c < C) rows::moments_column(moments, inp, C, c, begin + threadIdx.y, end, kRowLanes);
  float count, mean, m2;
  moments.finish(&count, &mean, &m2);
  s_count[threadIdx.y][threadIdx.x] = count;
  s_mean[threadIdx.y][threadIdx.x] = mean;
  s_m2[threadIdx.y][threadIdx.x] = m2;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float n = 0.0f, mu = 0.0f, acc = 0.0f;
    for (int k = 0; k < kRowLanes; ++k) {
      float nb = s_count[k][threadIdx.x];
      if (nb == 0.0f) continue;
      float total = n + nb;
      float delta = s_mean[k][threadIdx.x] - mu;
      mu += delta * (nb / total);
      acc += s_m2[k][threadIdx.x] + delta * delta * (n * nb / total);
      n = total;
    }
    partial_mean[int64_t(chunk) * C + c] = mu;
    partial_m2[int64_t(chunk) * C + c] = acc;
  }
}

// Merges the chunks' partials of 32 channels: kMergeLanes lanes per channel sum their chunks
// (batchnorm_rows.h), added in lane order: first the mean (sum of n_g * mean_g), then the sum of
// squared deviations about it (m2_g + n_g * (mean_g - mean)^2), in double. Block (32, kMergeLanes).
__global__ void batchnorm_stats_finalize_kernel(float* save_mean, float* save_rstd,
                                                float* running_mean, float* running_var,
                                                const float* partial_mean, const float* partial_m2,
                                                int64_t M, int C, int chunks,
                                                int64_t rows_per_chunk, float momentum, float eps) {
  __shared__ double s_part[rows::kMergeLanes][33];
  __shared__ double s_mean[32];
  const int c = blockIdx.x * 32 + threadIdx.x, lane = threadIdx.y;
  s_part[lane][threadIdx.x] =
      c < C ? rows::chunk_weighted_means(partial_mean, C, c, chunks, rows_per_chunk, M, lane) : 0.0;
  __syncthreads();
  if (lane == 0) {
    double total = 0.0;
    for (int k = 0; k < rows::kMergeLanes; ++k) total += s_part[k][threadIdx.x];
    s_mean[threadIdx.x] = total / double(M);
  }
  __syncthreads();
  const double mean = s_mean[threadIdx.x];
  // s_part's pass-1 values were read (by lane 0) before the barrier above: safe to overwrite.
  s_part[lane][threadIdx.x] =
      c < C ? rows::chunk_deviations(partial_mean, partial_m2, C, c, chunks, rows_per_chunk, M, lane, mean) : 0.0;
  __syncthreads();
  if (lane != 0 || c >= C) return;
  double m2 = 0.0;
  for (int k = 0; k < rows::kMergeLanes; ++k) m2 += s_part[k][threadIdx.x];
  double var = m2 / double(M);  // biased: what normalizes the batch
  save_mean[c] = float(mean);
  save_rstd[c] = float(1.0 / sqrt(var + double(eps)));
  if (running_mean != nullptr) {
    // PyTorch's running variance is the unbiased one.
    double unbiased = m2 / double(M - 1);
    running_mean[c] = float((1.0 - momentum) * double(running_mean[c]) + momentum * mean);
    running_var[c] = float((1.0 - momentum) * double(running_var[c]) + momentum * unbiased);
  }
}

// out = (x - mean) * (rstd * gamma) + beta, then + residual (when set), then ReLU (when
// asked; NaN passes, as relu_forward). With from_var, `spread` is a variance and the kernel
// takes rstd = 1/sqrt(var + eps) itself (eval mode); otherwise it is rstd.
__global__ void batchnorm_apply_kernel(float* out, const float* inp, const float* mean,
                                       const float* spread, const float* gamma, const float* beta,
                                       const float* residual, bool relu, int64_t M, int C, float eps,
                                       bool from_var) {
  const int c = blockIdx.x * 32 + threadIdx.x;
  if (c >= C) return;
  const float rstd = from_var ? 1.0f / sqrtf(spread[c] + eps) : spread[c];
  const float scale = rstd * gamma[c], shift = beta[c], mu = mean[c];
  rows::apply_column(out, inp, residual, relu, C, c, int64_t(blockIdx.y) * kRowLanes + threadIdx.y, M,
                     int64_t(gridDim.y) * kRowLanes, mu, scale, shift);
}

// partial_dy/partial_dyxhat are (chunks, C): sums of dout and dout * xhat over the chunk.
__global__ void batchnorm_backward_sums_kernel(float* partial_dy, float* partial_dyxhat,
                                               const float* dout, const float* inp,
                                               const float* mean, const float* rstd,
                                               const float* relu_out, int64_t M, int C,
                                               int64_t rows_per_chunk) {
  __shared__ float s_dy[kRowLanes][33], s_dyxhat[kRowLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const int chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < M ? begin + rows_per_chunk : M;
  float sum_dy = 0.0f, sum_dyxhat = 0.0f;
  if (c < C)
    rows::grad_sums_column(&sum_dy, &sum_dyxhat, dout, inp, relu_out, C, c, begin + threadIdx.y, end, kRowLanes,
                           mean[c], rstd[c]);
  s_dy[threadIdx.y][threadIdx.x] = sum_dy;
  s_dyxhat[threadIdx.y][threadIdx.x] = sum_dyxhat;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < kRowLanes; ++k) {
      a += s_dy[k][threadIdx.x];
      b += s_dyxhat[k][threadIdx.x];
    }
    partial_dy[int64_t(chunk) * C + c] = a;
    partial_dyxhat[int64_t(chunk) * C + c] = b;
  }
}

// sums (2, C): this call's sum(dy) and sum(dy * xhat), kept apart from dgamma/dbeta because
// those may already hold the other view's gradient (accumulate). kMergeLanes lanes per channel
// sum their chunks in double, added in lane order. Block (32, kMergeLanes).
__global__ void batchnorm_backward_finalize_kernel(float* dgamma, float* dbeta, float* sums,
                                                   const float* partial_dy,
                                                   const float* partial_dyxhat, int C, int chunks,
                                                   bool accumulate) {
  __shared__ double s_a[rows::kMergeLanes][33], s_b[rows::kMergeLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x, lane = threadIdx.y;
  double a = 0.0, b = 0.0;
  if (c < C) rows::chunk_sums(&a, &b, partial_dy, partial_dyxhat, C, c, chunks, lane);
  s_a[lane][threadIdx.x] = a;
  s_b[lane][threadIdx.x] = b;
  __syncthreads();
  if (lane != 0 || c >= C) return;
  a = 0.0;
  b = 0.0;
  for (int k = 0; k < rows::kMergeLanes; ++k) {
    a += s_a[k][threadIdx.x];
    b += s_b[k][threadIdx.x];
  }
  sums[c] = float(a);
  sums[C + c] = float(b);
  dbeta[c] = accumulate ? dbeta[c] + float(a) : float(a);
  dgamma[c] = accumulate ? dgamma[c] + float(b) : float(b);
}

// dx = gamma * rstd * (dy - sum(dy)/M - xhat * sum(dy*xhat)/M).
__global__ void batchnorm_backward_dx_kernel(float* dinp, const float* dout, const float* inp,
                                             const float* mean, const float* rstd,
                                             const float* gamma, const float* sums,
                                             const float* relu_out, int64_t M, int C) {
  const int c = blockIdx.x * 32 + threadIdx.x;
  if (c >= C) return;
  const float r_std = rstd[c], mu = mean[c], k = gamma[c] * r_std;
  const float mean_dy = sums[c] / float(M), mean_dyxhat = sums[C + c] / float(M);
  rows::grad_input_column(dinp, dout, inp, relu_out, C, c, int64_t(blockIdx.y) * kRowLanes + threadIdx.y, M,
                          int64_t(gridDim.y) * kRowLanes, mu, r_std, k, mean_dy, mean_dyxhat);
}

dim3 rows_grid(int64_t M, int C) {
  int64_t y = ceil_div(M, kRowLanes);
  // Enough row blocks to fill the GPU; each thread then strides over the remaining rows.
  y = std::min<int64_t>(y, std::max<int64_t>(1, 4096 / ceil_div(C, 32)));
  y = std::min<int64_t>(std::max<int64_t>(y, 1), 65535);
  return dim3(static_cast<unsigned>(ceil_div(C, 32)), static_cast<unsigned>(y));
}

}  // namespace

size_t BatchNormSplit::forward_scratch_floats(int C) const { return size_t(2) * chunks * C; }
size_t BatchNormSplit::backward_scratch_floats(int C) const { return size_t(2) * chunks * C + size_t(2) * C; }

BatchNormSplit batchnorm_split(int64_t M, int C, int num_sms) {
  BatchNormSplit split;
  const int64_t channel_tiles = ceil_div(C, 32);
  // About four resident blocks per SM; each chunk at least a few rows per lane so that the
  // partials stay much smaller than x.
  const int64_t wanted = ceil_div(4 * std::max(num_sms, 1), channel_tiles);
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(1024, ceil_div(M, 4 * kRowLanes)));
  int64_t chunks = std::min<int64_t>(std::max<int64_t>(wanted, 1), most);
  split.rows_per_chunk = ceil_div(M, chunks);
  split.chunks = static_cast<int>(ceil_div(M, split.rows_per_chunk));
  return split;
}

void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd, float* running_mean,
                             float* running_var, float* scratch, const float* inp,
                             const float* gamma, const float* beta, int64_t M, int C,
                             float momentum, float eps, const float* residual, bool relu,
                             const BatchNormSplit& split, cudaStream_t stream) {
  // inp, out are (M, C); save_mean, save_rstd, running_* are (C); scratch is 2*chunks*C.
  float* partial_mean = scratch;
  float* partial_m2 = scratch + size_t(split.chunks) * C;
  dim3 block(32, kRowLanes);
  dim3 grid(static_cast<unsigned>(ceil_div(C, 32)), static_cast<unsigned>(split.chunks));
  batchnorm_stats_kernel<<<grid, block, 0, stream>>>(partial_mean, partial_m2, inp, M, C,
                                                     split.rows_per_chunk);
  BYOL_CUDA_CHECK_LAUNCH();
  batchnorm_stats_finalize_kernel<<<static_cast<unsigned>(ceil_div(C, 32)), dim3(32, rows::kMergeLanes), 0, stream>>>(
      save_mean, save_rstd, running_mean, running_var, partial_mean, partial_m2, M, C,
      split.chunks, split.rows_per_chunk, momentum, eps);
  BYOL_CUDA_CHECK_LAUNCH();
  batchnorm_apply_kernel<<<rows_grid(M, C), block, 0, stream>>>(out, inp, save_mean, save_rstd, gamma, beta,
                                                                residual, relu, M, C, eps, false);
  BYOL_CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, int64_t M,
                            int C, float eps, const float* residual, bool relu, cudaStream_t stream) {
  dim3 block(32, kRowLanes);
  batchnorm_apply_kernel<<<rows_grid(M, C), block, 0, stream>>>(
      out, inp, running_mean, running_var, gamma, beta, residual, relu, M, C, eps, true);
  BYOL_CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, float* scratch,
                        const float* dout, const float* inp, const float* save_mean,
                        const float* save_rstd, const float* gamma, const float* relu_out, int64_t M,
                        int C, bool accumulate, const BatchNormSplit& split, cudaStream_t stream) {
  // dout, inp, dinp are (M, C); scratch is 2*chunks*C partials + 2*C sums.
  float* partial_dy = scratch;
  float* partial_dyxhat = scratch + size_t(split.chunks) * C;
  float* sums = scratch + size_t(2) * split.chunks * C;
  dim3 block(32, kRowLanes);
  dim3 grid(static_cast<unsigned>(ceil_div(C, 32)), static_cast<unsigned>(split.chunks));
  batchnorm_backward_sums_kernel<<<grid, block, 0, stream>>>(
      partial_dy, partial_dyxhat, dout, inp, save_mean, save_rstd, relu_out, M, C, split.rows_per_chunk);
  BYOL_CUDA_CHECK_LAUNCH();
  batchnorm_backward_finalize_kernel<<<static_cast<unsigned>(ceil_div(C, 32)), dim3(32, rows::kMergeLanes), 0, stream>>>(
      dgamma, dbeta, sums, partial_dy, partial_dyxhat, C, split.chunks, accumulate);
  BYOL_CUDA_CHECK_LAUNCH();
  batchnorm_backward_dx_kernel<<<rows_grid(M, C), block, 0, stream>>>(
      dinp, dout, inp, save_mean, save_rstd, gamma, sums, relu_out, M, C);
  BYOL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace byol
