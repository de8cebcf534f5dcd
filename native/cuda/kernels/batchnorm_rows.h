// batchnorm_rows.h: what one thread of the batch norm kernels (batchnorm.cu) does with its rows
// of one channel: column c of an (M, C) matrix, rows begin, begin + stride, ... < end, in that
// order. Each function is built on unrolled(), which loads kUnroll rows before it uses any of
// them, so a thread keeps kUnroll independent loads in flight instead of one: the kernels are
// memory-bound, and with one load per iteration (the first version: behind a division, in
// Welford's update) a GPU holds too few bytes in flight to approach its bandwidth. Results are
// those of the plain loop, bit for bit: the same operations on the same rows in the same order
// (the C++ runner checks this on the host, batchnorm_rows/unrolled_equals_plain_loop). Compiled by nvcc for the kernels and by the host
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

// Calls use(load(i), i) for i = begin, begin + stride, ... < end, in that order, issuing the loads
// of kUnroll indices before their uses: the one unrolled loop every function below is built on.
template <typename Load, typename Use>
BYOL_HD void unrolled(int64_t begin, int64_t end, int64_t stride, Load&& load, Use&& use) {
  using Value = decltype(load(begin));
  int64_t i = begin;
  for (; i + (kUnroll - 1) * stride < end; i += kUnroll * stride) {
    Value v[kUnroll];
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) v[k] = load(i + k * stride);
    BYOL_UNROLL
    for (int k = 0; k < kUnroll; ++k) use(v[k], i + k * stride);
  }
  for (; i < end; i += stride) use(load(i), i);
}

// Two floats loaded together (gradient and input, or two partials).
struct Pair {
  float a, b;
};

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
  unrolled(begin, end, stride, [&](int64_t r) { return x[r * C + c]; }, [&](float v, int64_t) { m.add(v); });
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
  unrolled(
      begin, end, stride,
      [&](int64_t r) {
        const int64_t i = r * C + c;
        return Pair{masked_dy(dout[i], relu_out, i), x[i]};
      },
      [&](Pair v, int64_t) {
        a += v.a;
        b = fmaf(v.a, (v.b - mu) * rstd, b);
      });
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
  unrolled(
      begin, end, stride,
      [&](int64_t r) {
        const int64_t i = r * C + c;
        return bn_epilogue(x[i], mu, scale, shift, residual, i, relu);
      },
      [&](float v, int64_t r) { out[r * C + c] = v; });
}

// dx = k * (dy - mean_dy - xhat * mean_dyxhat), dy masked as above. dinp may alias dout.
BYOL_HD void grad_input_column(float* dinp, const float* dout, const float* x, const float* relu_out,
                               int64_t C, int c, int64_t begin, int64_t end, int64_t stride, float mu,
                               float rstd, float k_scale, float mean_dy, float mean_dyxhat) {
  unrolled(
      begin, end, stride,
      [&](int64_t r) {
        const int64_t i = r * C + c;
        const float xhat = (x[i] - mu) * rstd;
        return k_scale * (masked_dy(dout[i], relu_out, i) - mean_dy - xhat * mean_dyxhat);
      },
      [&](float g, int64_t r) { dinp[r * C + c] = g; });
}

// ---- merging the chunks' partials (the finalize kernels) ----
// kMergeLanes threads per channel each take the chunks g = lane, lane + kMergeLanes, ... (their
// loads kUnroll ahead, independent of the sums) and their sums are added in lane order: the
// merge that one thread per channel did chunk by chunk, behind a load and a division each,
// waited out hundreds of memory latencies in a row for a 64-channel layer (264 chunks).

constexpr int kMergeLanes = 8;

// Rows of chunk g of M rows cut into chunks of rows_per_chunk.
BYOL_HD int64_t chunk_rows(int64_t M, int64_t rows_per_chunk, int64_t g) {
  const int64_t begin = g * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < M ? begin + rows_per_chunk : M;
  return end > begin ? end - begin : 0;
}

// Sum over this lane's chunks of n_g * mean_g (pass 1: the mean of all M rows is its total / M).
BYOL_HD double chunk_weighted_means(const float* partial_mean, int64_t C, int c, int64_t chunks,
                                    int64_t rows_per_chunk, int64_t M, int lane) {
  double sum = 0.0;
  unrolled(
      lane, chunks, kMergeLanes, [&](int64_t g) { return partial_mean[g * C + c]; },
      [&](float m, int64_t g) { sum += double(chunk_rows(M, rows_per_chunk, g)) * double(m); });
  return sum;
}

// Sum over this lane's chunks of m2_g + n_g * (mean_g - mean)^2 (pass 2: all M rows' sum of
// squared deviations is its total; exact in exact arithmetic, no cancellation).
BYOL_HD double chunk_deviations(const float* partial_mean, const float* partial_m2, int64_t C, int c, int64_t chunks,
                                int64_t rows_per_chunk, int64_t M, int lane, double mean) {
  double sum = 0.0;
  unrolled(
      lane, chunks, kMergeLanes, [&](int64_t g) { return Pair{partial_mean[g * C + c], partial_m2[g * C + c]}; },
      [&](Pair v, int64_t g) {
        const double d = double(v.a) - mean;
        sum += double(v.b) + double(chunk_rows(M, rows_per_chunk, g)) * d * d;
      });
  return sum;
}

// Sums over this lane's chunks of two partials (the backward's sum(dy) and sum(dy * xhat)).
BYOL_HD void chunk_sums(double* a, double* b, const float* partial_a, const float* partial_b, int64_t C, int c,
                        int64_t chunks, int lane) {
  double sa = 0.0, sb = 0.0;
  unrolled(
      lane, chunks, kMergeLanes, [&](int64_t g) { return Pair{partial_a[g * C + c], partial_b[g * C + c]}; },
      [&](Pair v, int64_t) {
        sa += double(v.a);
        sb += double(v.b);
      });
  *a = sa;
  *b = sb;
}

}  // namespace batchnorm_rows
}  // namespace byol
