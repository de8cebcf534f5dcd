// conv_gemm.cc: 2-D convolution as im2col + SGEMM (forward, backward-data, backward-weight).
// Contract: byol/backend.h; which convolutions take this path: CpuBackend::conv_uses_gemm.
//
// Why: on CPUs without AVX-512, oneDNN 2.6's direct NHWC convolutions (jit:avx2) run at about
// half of what its SGEMM reaches on the same cores, worst for backward-weights and for the deep
// layers' small images (ResNet-18 cifar layer4: 47-90 GFLOP/s against 140-170 for the GEMM of
// the same product, 2-core AVX2 EPYC; BENCHMARKS.md). A convolution is one GEMM over unfolded
// input patches:
//   col[m][(r*S + t)*C + c] = x[n][p*stride + r - pad][q*stride + t - pad][c]   (0 outside)
//   with m = (n*P + p)*Q + q, so that with the weights as W[k][(r*S + t)*C + c] (KRSC):
//   forward          y[m][k]  = sum_j col[m][j] * W[k][j]         (y = col W^T)
//   backward-data    dcol     = dy W, folded back: dx[pixel] = sum of its dcol entries
//   backward-weight  dW       = dy^T col
// The unfolded rows of a whole batch would be 9x the input, so the batch goes through in chunks
// of images whose unfolded rows take at most kColumnBytes (whole images, at least one): chunks
// that stay in cache keep the GEMMs near their peak. A 1x1, stride-1, unpadded convolution is
// already a GEMM over the NHWC rows and is never unfolded.
//
// Results are deterministic for a fixed thread count (static blocks; sgemm's own partition).
// They differ from oneDNN's in summation order only (tests: ~1e-6 relative).
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu_backend.h"
#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

constexpr size_t kColumnBytes = size_t(8) << 20;

bool is_pointwise(const ConvShape& s) { return s.R == 1 && s.S == 1 && s.stride == 1 && s.pad == 0; }

// Images per chunk: unfolded rows of at most kColumnBytes, at least one image.
int chunk_images(const ConvShape& s) {
  const size_t per_image = size_t(s.P()) * s.Q() * s.C * s.R * s.S * sizeof(float);
  return static_cast<int>(std::clamp<size_t>(kColumnBytes / per_image, 1, size_t(s.N)));
}

void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  BYOL_CHECK(status == dnnl_success, "convolution GEMM: dnnl_sgemm failed (status ", int(status),
             ") for M=", M, " N=", N, " K=", K);
}

// Unfolds images [n0, n1) into col (rows m = ((n - n0)*P + p)*Q + q).
void im2col(float* col, const float* x, const ConvShape& s, int n0, int n1) {
  const int P = s.P(), Q = s.Q();
  const int64_t CRS = int64_t(s.C) * s.R * s.S;
  const int64_t rows = int64_t(n1 - n0) * P;  // one (image, output row) per item
  parallel_blocks(rows, rows * Q * CRS, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int n = n0 + static_cast<int>(item / P), p = static_cast<int>(item % P);
      float* row = col + item * Q * CRS;
      for (int q = 0; q < Q; ++q, row += CRS)
        for (int r = 0; r < s.R; ++r) {
          const int h = p * s.stride + r - s.pad;
          for (int t = 0; t < s.S; ++t) {
            const int w = q * s.stride + t - s.pad;
            float* dst = row + (int64_t(r) * s.S + t) * s.C;
            if (h < 0 || h >= s.H || w < 0 || w >= s.W)
              std::memset(dst, 0, sizeof(float) * s.C);
            else
              std::memcpy(dst, x + ((int64_t(n) * s.H + h) * s.W + w) * s.C, sizeof(float) * s.C);
          }
        }
    }
  });
}

// Input row h of one image of dx from that image's unfolded gradient: every input pixel gathers
// the entries of the output positions whose patches cover it, so each is written once.
BYOL_CPU_KERNEL void col2im_row_kernel(float* out, const float* dcol, const ConvShape& s, int h) {
  const int P = s.P(), Q = s.Q();
  const int64_t CRS = int64_t(s.C) * s.R * s.S;
  for (int w = 0; w < s.W; ++w, out += s.C) {
    for (int c = 0; c < s.C; ++c) out[c] = 0.0f;
    for (int r = 0; r < s.R; ++r) {
      const int hp = h + s.pad - r;  // = p * stride
      if (hp < 0 || hp % s.stride != 0 || hp / s.stride >= P) continue;
      const int p = hp / s.stride;
      for (int t = 0; t < s.S; ++t) {
        const int wq = w + s.pad - t;
        if (wq < 0 || wq % s.stride != 0 || wq / s.stride >= Q) continue;
        const float* src = dcol + (int64_t(p) * Q + wq / s.stride) * CRS + (int64_t(r) * s.S + t) * s.C;
#pragma omp simd
        for (int c = 0; c < s.C; ++c) out[c] += src[c];
      }
    }
  }
}

// Folds dcol (the unfolded gradient of images [n0, n1)) back into dx.
void col2im(float* dx, const float* dcol, const ConvShape& s, int n0, int n1) {
  const int64_t per_image = int64_t(s.P()) * s.Q() * s.C * s.R * s.S;
  const int64_t rows = int64_t(n1 - n0) * s.H;  // one (image, input row) per item
  parallel_blocks(rows, rows * s.W * s.C * s.R * s.S, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int local = static_cast<int>(item / s.H), h = static_cast<int>(item % s.H);
      col2im_row_kernel(dx + ((int64_t(n0 + local) * s.H + h) * s.W) * s.C, dcol + local * per_image, s, h);
    }
  });
}

// OIHW -> KRSC (R*S > 1 only; for 1x1 the two are the same).
void weights_to_krsc(float* dst, const float* w, const ConvShape& s) {
  const int64_t RS = int64_t(s.R) * s.S, CRS = RS * s.C;
  parallel_blocks(s.K, s.K * CRS, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int c = 0; c < s.C; ++c)
        for (int64_t rs = 0; rs < RS; ++rs) dst[k * CRS + rs * s.C + c] = w[k * CRS + c * RS + rs];
  });
}

// KRSC -> OIHW into the user's gradient, added to what it holds when accumulating.
void krsc_to_weights(float* dw, const float* g, const ConvShape& s, bool accumulate) {
  const int64_t RS = int64_t(s.R) * s.S, CRS = RS * s.C;
  parallel_blocks(s.K, s.K * CRS, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k)
      for (int c = 0; c < s.C; ++c)
        for (int64_t rs = 0; rs < RS; ++rs) {
          const float v = g[k * CRS + rs * s.C + c];
          float& d = dw[k * CRS + c * RS + rs];
          d = accumulate ? d + v : v;
        }
  });
}

}  // namespace

bool CpuBackend::conv_uses_gemm(PlanOp op, const ConvShape& s) const {
  // bf16 plans (forward, backward-data) stay on oneDNN: it rounds and accumulates for us.
  if (conv_bf16() && op != PlanOp::conv_backward_weight) return false;
  switch (conv_algorithm()) {
    case ConvAlgorithm::gemm: return true;
    case ConvAlgorithm::onednn: return false;
    case ConvAlgorithm::automatic: break;
  }
  // Where oneDNN has AVX-512 kernels they are the ones measured ahead of PyTorch; the GEMM
  // path was measured (byol_bench_conv) only against jit:avx2 and below.
  if (!conv_gemm_auto_) return false;
  // Per pass, from byol_bench_conv on ResNet-18 shapes (2-core AVX2 EPYC, BENCHMARKS.md). With
  // fewer than 32 channels on either side the GEMMs are thin (16 columns, or an inner dimension
  // of 16) and oneDNN's direct kernels win by up to 2x. Above that, backward-weight gains
  // 1.1-1.7x everywhere; forward gains from 64 channels (1.1-1.8x, most for strided 3x3);
  // backward-data is at parity for stride 1, so only strided ones (oneDNN's weak case there,
  // 1.1-2.4x) move.
  const int narrow = std::min(s.C, s.K);
  if (narrow < 32) return false;
  switch (op) {
    case PlanOp::conv_backward_weight: return true;
    case PlanOp::conv_forward: return narrow >= 64;
    default: return narrow >= 64 && s.stride > 1;
  }
}

const char* CpuBackend::gemm_conv_implementation(const ConvShape& s) {
  return is_pointwise(s) ? "gemm:sgemm" : "gemm:im2col+sgemm";
}

const float* CpuBackend::gemm_weights(const float* weight, const ConvShape& s) {
  if (s.R == 1 && s.S == 1) return weight;
  float* krsc = static_cast<float*>(scratch_.get(sizeof(float) * size_t(s.K) * s.C * s.R * s.S));
  weights_to_krsc(krsc, weight, s);
  return krsc;
}

void CpuBackend::gemm_conv_forward(float* out, const float* inp, const float* weight, const ConvShape& s) {
  const int64_t CRS = int64_t(s.C) * s.R * s.S, PQ = int64_t(s.P()) * s.Q();
  const float* w = gemm_weights(weight, s);
  if (is_pointwise(s)) {
    sgemm('N', 'T', int64_t(s.N) * PQ, s.K, CRS, inp, CRS, w, CRS, 0.0f, out, s.K);
    return;
  }
  const int chunk = chunk_images(s);
  float* col = static_cast<float*>(input_scratch_.get(sizeof(float) * size_t(chunk) * PQ * CRS));
  for (int n0 = 0; n0 < s.N; n0 += chunk) {
    const int n1 = std::min(s.N, n0 + chunk);
    im2col(col, inp, s, n0, n1);
    sgemm('N', 'T', (n1 - n0) * PQ, s.K, CRS, col, CRS, w, CRS, 0.0f, out + n0 * PQ * s.K, s.K);
  }
}

void CpuBackend::gemm_conv_backward_data(float* dinp, const float* dout, const float* weight, const ConvShape& s) {
  const int64_t CRS = int64_t(s.C) * s.R * s.S, PQ = int64_t(s.P()) * s.Q();
  const float* w = gemm_weights(weight, s);
  if (is_pointwise(s)) {
    sgemm('N', 'N', int64_t(s.N) * PQ, CRS, s.K, dout, s.K, w, CRS, 0.0f, dinp, CRS);
    return;
  }
  const int chunk = chunk_images(s);
  float* dcol = static_cast<float*>(input_scratch_.get(sizeof(float) * size_t(chunk) * PQ * CRS));
  for (int n0 = 0; n0 < s.N; n0 += chunk) {
    const int n1 = std::min(s.N, n0 + chunk);
    sgemm('N', 'N', (n1 - n0) * PQ, CRS, s.K, dout + n0 * PQ * s.K, s.K, w, CRS, 0.0f, dcol, CRS);
    col2im(dinp, dcol, s, n0, n1);
  }
}

void CpuBackend::gemm_conv_backward_weight(float* dweight, const float* dout, const float* inp, const ConvShape& s,
                                           bool accumulate) {
  const int64_t CRS = int64_t(s.C) * s.R * s.S, PQ = int64_t(s.P()) * s.Q();
  // 1x1: KRSC is OIHW, so the GEMMs accumulate straight into the user's gradient.
  const bool direct = s.R == 1 && s.S == 1;
  float* g = direct ? dweight : static_cast<float*>(scratch_.get(sizeof(float) * size_t(s.K) * CRS));
  const float first_beta = direct && accumulate ? 1.0f : 0.0f;
  if (is_pointwise(s)) {
    sgemm('T', 'N', s.K, CRS, int64_t(s.N) * PQ, dout, s.K, inp, CRS, first_beta, g, CRS);
  } else {
    const int chunk = chunk_images(s);
    float* col = static_cast<float*>(input_scratch_.get(sizeof(float) * size_t(chunk) * PQ * CRS));
    for (int n0 = 0; n0 < s.N; n0 += chunk) {
      const int n1 = std::min(s.N, n0 + chunk);
      im2col(col, inp, s, n0, n1);
      sgemm('T', 'N', s.K, CRS, (n1 - n0) * PQ, dout + n0 * PQ * s.K, s.K, col, CRS, n0 == 0 ? first_beta : 1.0f,
            g, CRS);
    }
  }
  if (!direct) krsc_to_weights(dweight, g, s, accumulate);
}

}  // namespace cpu
}  // namespace byol
