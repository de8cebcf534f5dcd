// losses.cu: BYOL regression loss and softmax cross-entropy, forward and backward.
// Convention: outputs first; the scalar loss stays in device memory (no host sync in a
// step) and is written (=), or added (+=) when `accumulate`; dp/dlogits are written (=).
// One block per row reduces with warp shuffles; per-row results go to a scratch vector
// that one block then sums in a fixed order, so the loss is deterministic (no atomics).
#include "common.cuh"
#include "cuda_check.h"
#include "kernels.h"

namespace byol {
namespace cuda {
namespace {

// rsqrt(max(|x|^2, 1e-12)) of BYOL.md, in full precision (rsqrtf is ~2 ulp).
__device__ __forceinline__ float inverse_norm(float sumsq) { return 1.0f / sqrtf(fmaxf(sumsq, 1e-12f)); }

// row_loss[b] = || n(p_b) - n(z_b) ||^2, p and z (B, D).
__global__ void byol_loss_rows_kernel(float* row_loss, const float* p, const float* z, int D) {
  __shared__ float shared[32];
  const float* pr = p + size_t(blockIdx.x) * D;
  const float* zr = z + size_t(blockIdx.x) * D;
  float sp = 0.0f, sz = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    sp = fmaf(pr[i], pr[i], sp);
    sz = fmaf(zr[i], zr[i], sz);
  }
  const float ip = inverse_norm(block_sum(sp, shared));
  const float iz = inverse_norm(block_sum(sz, shared));
  // Summing squared differences of the normalized rows (rather than 2 - 2 cos) keeps full
  // relative precision when the loss is near zero.
  float sq = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float d = pr[i] * ip - zr[i] * iz;
    sq = fmaf(d, d, sq);
  }
  sq = block_sum(sq, shared);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = sq;
}

// loss (+)= sum(row_values) / B, one block.
__global__ void mean_rows_kernel(float* loss, const float* row_values, int B, bool accumulate) {
  __shared__ float shared[32];
  float s = 0.0f;
  for (int b = threadIdx.x; b < B; b += blockDim.x) s += row_values[b];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) {
    float mean = s / float(B);
    *loss = accumulate ? *loss + mean : mean;
  }
}

// dp_b = s * (g - n(p) (n(p).g)), g = (2 dloss / B) (n(p) - n(z)), s = 1/|p|; when |p|^2 is
// clamped to 1e-12 the normalization is a constant scale and dp_b = s * g.
__global__ void byol_loss_backward_kernel(float* dp, const float* p, const float* z, float dloss,
                                          int B, int D) {
  __shared__ float shared[32];
  const float* pr = p + size_t(blockIdx.x) * D;
  const float* zr = z + size_t(blockIdx.x) * D;
  float* dr = dp + size_t(blockIdx.x) * D;
  float sp = 0.0f, sz = 0.0f;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    sp = fmaf(pr[i], pr[i], sp);
    sz = fmaf(zr[i], zr[i], sz);
  }
  sp = block_sum(sp, shared);
  sz = block_sum(sz, shared);
  const float ip = inverse_norm(sp), iz = inverse_norm(sz);
  const float c = 2.0f * dloss / float(B);
  // PyTorch's clamp_min passes the gradient where the input >= the bound.
  const bool through_norm = sp >= 1e-12f;
  float dot = 0.0f;  // n(p) . g
  if (through_norm) {
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
      float np = pr[i] * ip;
      dot = fmaf(np, c * (np - zr[i] * iz), dot);
    }
    dot = block_sum(dot, shared);
  }
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    float np = pr[i] * ip;
    float g = c * (np - zr[i] * iz);
    dr[i] = through_norm ? ip * (g - np * dot) : ip * g;
  }
}

// probs (B, K) = softmax(logits); row_loss[b] = logsumexp(logits_b) - logits_b[label_b].
// A label outside [0, K) gives a NaN row loss and sets a status bit.
__global__ void cross_entropy_rows_kernel(float* row_loss, float* probs, unsigned* status,
                                          const float* logits, const int32_t* labels, int K) {
  __shared__ float shared[32];
  const float* row = logits + size_t(blockIdx.x) * K;
  float* prow = probs + size_t(blockIdx.x) * K;
  float m = -INFINITY;
  for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, row[k]);
  m = block_max(m, shared);
  float s = 0.0f;
  for (int k = threadIdx.x; k < K; k += blockDim.x) s += expf(row[k] - m);
  s = block_sum(s, shared);
  const float inv = 1.0f / s;
  for (int k = threadIdx.x; k < K; k += blockDim.x) prow[k] = expf(row[k] - m) * inv;
  if (threadIdx.x == 0) {
    const int32_t label = labels[blockIdx.x];
    if (label < 0 || label >= K) {
      atomicOr(status, kStatusCrossEntropyForwardLabel);
      row_loss[blockIdx.x] = NAN;
    } else {
      row_loss[blockIdx.x] = logf(s) - (row[label] - m);
    }
  }
}

// dlogits = dloss / B * (probs - onehot(label)).
__global__ void cross_entropy_backward_kernel(float* dlogits, unsigned* status, const float* probs,
                                              const int32_t* labels, float dloss, int B, int K) {
  const size_t total = size_t(B) * K;
  const float scale = dloss / float(B);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const size_t b = i / K;
    const int k = int(i % K);
    const int32_t label = labels[b];
    if (label < 0 || label >= K) {
      if (k == 0) atomicOr(status, kStatusCrossEntropyBackwardLabel);
      dlogits[i] = NAN;
    } else {
      dlogits[i] = scale * (probs[i] - (k == label ? 1.0f : 0.0f));
    }
  }
}

// Row widths are 256..4096 (projection/hidden sizes) or the class count: 256 threads keep
// every lane busy for the common D = 256 and loop beyond.
constexpr int kRowThreads = 256;

}  // namespace

void byol_loss_forward(float* loss, float* row_scratch, const float* p, const float* z, int B,
                       int D, bool accumulate, cudaStream_t stream) {
  // p, z (B, D); row_scratch (B); loss (1).
  byol_loss_rows_kernel<<<B, kRowThreads, 0, stream>>>(row_scratch, p, z, D);
  BYOL_CUDA_CHECK_LAUNCH();
  mean_rows_kernel<<<1, 1024, 0, stream>>>(loss, row_scratch, B, accumulate);
  BYOL_CUDA_CHECK_LAUNCH();
}

void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B, int D,
                        cudaStream_t stream) {
  byol_loss_backward_kernel<<<B, kRowThreads, 0, stream>>>(dp, p, z, dloss, B, D);
  BYOL_CUDA_CHECK_LAUNCH();
}

void cross_entropy_forward(float* loss, float* probs, float* row_scratch, unsigned* status,
                           const float* logits, const int32_t* labels, int B, int K,
                           cudaStream_t stream) {
  // logits, probs (B, K); labels (B); row_scratch (B); loss (1).
  cross_entropy_rows_kernel<<<B, kRowThreads, 0, stream>>>(row_scratch, probs, status, logits,
                                                           labels, K);
  BYOL_CUDA_CHECK_LAUNCH();
  mean_rows_kernel<<<1, 1024, 0, stream>>>(loss, row_scratch, B, false);
  BYOL_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(float* dlogits, unsigned* status, const float* probs,
                            const int32_t* labels, float dloss, int B, int K,
                            cudaStream_t stream) {
  const size_t total = size_t(B) * K;
  cross_entropy_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(dlogits, status, probs,
                                                                          labels, dloss, B, K);
  BYOL_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace byol
