// batchnorm_rows.h: what one thread of the batch norm kernels (batchnorm.cu) does with its rows
// of one channel: column c of an (M, C) matrix, rows begin, begin + stride, ... < end, in that
// order. Each function loads kUnroll rows before it uses any of them, so a thread keeps
// kUnroll independent loads in flight instead of one: the kernels are memory-bound, and with
// one load per iteration (the first version: behind a division, in Welford's update) a GPU
// holds too few bytes in flight to approach its bandwidth. Results are those of the plain loop, bit for bit: the same
// operations on the same rows in the same order (the C++ runner checks this on the host,
// batchnorm_rows/unrolled_equals_plain_loop). Compiled by nvcc for the kernels and by the host
// compiler for that test.
#pragma once
#include <cstdint>

#include "../../core/optim_math.h"  // BYOL_HD

// nvcc unrolls the kUnroll loops (device code); the host compiler, for the test, needs no hint.
#if defined(__CUDA_ARCH__)
#define BYOL_UNROLL _Pragma("unroll")
#else
#define BYOL_UNROLL
#endif

namespace byol {
namespace batchnorm_rows {

constexpr int kUnroll = 4;

// A thread's moments of its rows about a shift, the first value it reads: s1 = sum(x - shift),
// s2 = sum((x - shift)^2). No division per value: Welford's update divides by the count, and
// that division (with its slow-path branch) sat between the loads and kept them one at a time.
// The shift keeps s2 - s1^2/n from cancelling when |mean| is large next to the spread (the CPU
// backend shifts the same way, in double).
struct ShiftedMoments {
  float shift = 0.0f, count = 0.0f, s1 = 0.0f, s2 = 0.0f;
  BYOL_HD void add(float x) {
    const float d = x - shift;
    count += 1.0f;
    s1 += d;
    s2 = fmaf(d, d, s2);
  }
  // The count, mean and sum of squared deviations (m2) of the values added.
  BYOL_HD void finish(float* n, float* mean, float* m2) const {
    *n = count;
    if (count == 0.0f) {
      *mean = 0.0f;
      *m2 = 0.0f;
      return;
    }
    const float d = s1 / count;
    *mean = shift + d;
    const float v = fmaf(-s1, d, s2);
    *m2 = v > 0.0f ? v : 0.0f;
  }
};

BYOL_HD void moments_column(ShiftedMoments& m, const float* x, int64_t C, int c, int64_t begin, int64_t end,
                            int64_t stride) {
  if (begin < end) m.shift = x[begin * C + c];
  int64_t r = begin;
  for (; r + (kUnroll - 1) * stride < end; r += kUnroll * stride) {
    float v[kUnroll];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) v[k] = x[(r + k * stride) * C + c];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) m.add(v[k]);
  }
  for (; r < end; r += stride) m.add(x[r * C + c]);
}

// dout as the backward sees it: masked by the fused ReLU's output when there is one.
BYOL_HD float masked_dy(float dy, const float* relu_out, int64_t i) {
  return relu_out == nullptr || relu_out[i] > 0.0f ? dy : 0.0f;
}

// Adds dy to *sum_dy and dy * xhat to *sum_dyxhat (xhat = (x - mu) * rstd) over the rows.
BYOL_HD void grad_sums_column(float* sum_dy, float* sum_dyxhat, const float* dout, const float* x,
                              const float* relu_out, int64_t C, int c, int64_t begin, int64_t end,
                              int64_t stride, float mu, float rstd) {
  float a = *sum_dy, b = *sum_dyxhat;
  int64_t r = begin;
  for (; r + (kUnroll - 1) * stride < end; r += kUnroll * stride) {
    float dy[kUnroll], xv[kUnroll];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t i = (r + k * stride) * C + c;
      dy[k] = masked_dy(dout[i], relu_out, i);
      xv[k] = x[i];
    }
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      a += dy[k];
      b = fmaf(dy[k], (xv[k] - mu) * rstd, b);
    }
  }
  for (; r < end; r += stride) {
    const int64_t i = r * C + c;
    const float dy = masked_dy(dout[i], relu_out, i);
    a += dy;
    b = fmaf(dy, (x[i] - mu) * rstd, b);
  }
  *sum_dy = a;
  *sum_dyxhat = b;
}

// out = (x - mu) * scale + shift (one fmaf), then + residual (when set), then ReLU (when asked;
// NaN passes, as relu_forward). out may alias x or residual (each element is read before it is
// written, by the same thread).
BYOL_HD float bn_epilogue(float x, float mu, float scale, float shift, const float* residual, int64_t i,
                          bool relu) {
  float v = fmaf(x - mu, scale, shift);
  if (residual) v = optim::add(v, residual[i]);  // one rounding, as the backend's add
  if (relu) v = (v > 0.0f || v != v) ? v : 0.0f;
  return v;
}

BYOL_HD void apply_column(float* out, const float* x, const float* residual, bool relu, int64_t C, int c,
                          int64_t begin, int64_t end, int64_t stride, float mu, float scale, float shift) {
  int64_t r = begin;
  for (; r + (kUnroll - 1) * stride < end; r += kUnroll * stride) {
    float v[kUnroll];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t i = (r + k * stride) * C + c;
      v[k] = bn_epilogue(x[i], mu, scale, shift, residual, i, relu);
    }
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) out[(r + k * stride) * C + c] = v[k];
  }
  for (; r < end; r += stride) {
    const int64_t i = r * C + c;
    out[i] = bn_epilogue(x[i], mu, scale, shift, residual, i, relu);
  }
}

// dx = k * (dy - mean_dy - xhat * mean_dyxhat), dy masked as above. dinp may alias dout.
BYOL_HD void grad_input_column(float* dinp, const float* dout, const float* x, const float* relu_out,
                               int64_t C, int c, int64_t begin, int64_t end, int64_t stride, float mu,
                               float rstd, float k_scale, float mean_dy, float mean_dyxhat) {
  int64_t r = begin;
  for (; r + (kUnroll - 1) * stride < end; r += kUnroll * stride) {
    float g[kUnroll];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t i = (r + k * stride) * C + c;
      const float xhat = (x[i] - mu) * rstd;
      g[k] = k_scale * (masked_dy(dout[i], relu_out, i) - mean_dy - xhat * mean_dyxhat);
    }
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) dinp[(r + k * stride) * C + c] = g[k];
  }
  for (; r < end; r += stride) {
    const int64_t i = r * C + c;
    const float xhat = (x[i] - mu) * rstd;
    dinp[i] = k_scale * (masked_dy(dout[i], relu_out, i) - mean_dy - xhat * mean_dyxhat);
  }
}

}  // namespace batchnorm_rows
}  // namespace byol
