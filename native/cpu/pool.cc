// pool.cc: max pooling (ImageNet stem) and global average pooling (encoder head) on NHWC.
// Contract: byol/backend.h. Max pooling follows PyTorch exactly: padding never wins (it is
// -inf), NaN wins, ties keep the first pixel in row-major scan order, and argmax is the
// flat index h*W + w inside the image.
#include <limits>
#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

void check_pool(const char* op, const PoolShape& s) {
  BYOL_CHECK(s.N > 0 && s.H > 0 && s.W > 0 && s.C > 0, op,
             ": expected N, H, W, C > 0 but received N=", s.N, ", H=", s.H, ", W=", s.W,
             ", C=", s.C);
  BYOL_CHECK(s.kernel > 0, op, ": expected kernel > 0 but received ", s.kernel);
  BYOL_CHECK(s.stride > 0, op, ": expected stride > 0 but received ", s.stride);
  // PyTorch's rule: with more padding a window could hold nothing but padding.
  BYOL_CHECK(s.pad >= 0 && s.pad <= s.kernel / 2, op, ": expected pad in [0, kernel/2 = ",
             s.kernel / 2, "] but received ", s.pad);
  BYOL_CHECK(s.H + 2 * s.pad >= s.kernel && s.W + 2 * s.pad >= s.kernel, op, ": kernel ",
             s.kernel, " does not fit the padded input ", s.H, "x", s.W, " (pad ", s.pad, ")");
  BYOL_CHECK(static_cast<int64_t>(s.H) * s.W <= std::numeric_limits<int32_t>::max(), op,
             ": H*W = ", static_cast<int64_t>(s.H) * s.W, " does not fit the int32 argmax");
}

// One output row (fixed image and p) of max pooling: Q pixels x C channels.
BYOL_CPU_KERNEL void maxpool_row_kernel(float* out, int32_t* argmax, const float* image,
                                        int h_begin, int h_end, int W, int C, int Q,
                                        int kernel, int stride, int pad) {
  for (int q = 0; q < Q; ++q) {
    const int w0 = q * stride - pad;
    const int w_begin = std::max(w0, 0), w_end = std::min(w0 + kernel, W);
    float* best = out + static_cast<int64_t>(q) * C;
    int32_t* best_index = argmax + static_cast<int64_t>(q) * C;
    const int32_t first = h_begin * W + w_begin;
    for (int c = 0; c < C; ++c) {
      best[c] = -std::numeric_limits<float>::infinity();
      best_index[c] = first;
    }
    for (int h = h_begin; h < h_end; ++h) {
      for (int w = w_begin; w < w_end; ++w) {
        const float* x = image + (static_cast<int64_t>(h) * W + w) * C;
        const int32_t index = h * W + w;
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          const float v = x[c];
          if (v > best[c] || v != v) {
            best[c] = v;
            best_index[c] = index;
          }
        }
      }
    }
  }
}

// out[c] = mean over HW rows of image[., c], summed in double.
BYOL_CPU_KERNEL void avgpool_image_kernel(float* out, double* sum, const float* image, int HW,
                                          int C) {
  for (int c = 0; c < C; ++c) sum[c] = 0.0;
  for (int i = 0; i < HW; ++i) {
    const float* x = image + static_cast<int64_t>(i) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) sum[c] += x[c];
  }
  for (int c = 0; c < C; ++c) out[c] = static_cast<float>(sum[c] / HW);
}

// Rows [row_begin, row_end) of dinp (N*HW rows of C): dout of the row's image / HW.
BYOL_CPU_KERNEL void avgpool_backward_kernel(float* dinp, const float* dout, int64_t row_begin,
                                             int64_t row_end, int HW, int C) {
  // Divide, as PyTorch does: multiplying by 1/HW drifts by an ulp.
  const float count = static_cast<float>(HW);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const float* g = dout + (row / HW) * C;
    float* dx = dinp + row * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) dx[c] = g[c] / count;
  }
}

}  // namespace

void CpuBackend::maxpool2d_forward(float* out, int32_t* argmax, const float* inp,
                                   const PoolShape& s) {
  const char* op = "maxpool2d_forward";
  const OpClock op_clock(this, op);
  check_pool(op, s);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, argmax);
  BYOL_CPU_CHECK_PTR(op, inp);
  use_threads();
  const int H = s.H, W = s.W, C = s.C, P = s.P(), Q = s.Q();
  const int64_t out_rows = static_cast<int64_t>(s.N) * P;
  parallel_blocks(out_rows, out_rows * Q * C * s.kernel * s.kernel, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / P;
      const int h0 = static_cast<int>(row % P) * s.stride - s.pad;
      maxpool_row_kernel(out + row * Q * C, argmax + row * Q * C, inp + n * H * W * C,
                         std::max(h0, 0), std::min(h0 + s.kernel, H), W, C, Q, s.kernel,
                         s.stride, s.pad);
    }
  });
}

void CpuBackend::maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax,
                                    const PoolShape& s) {
  const char* op = "maxpool2d_backward";
  const OpClock op_clock(this, op);
  check_pool(op, s);
  BYOL_CPU_CHECK_PTR(op, dinp);
  BYOL_CPU_CHECK_PTR(op, dout);
  BYOL_CPU_CHECK_PTR(op, argmax);
  use_threads();
  const int HW = s.H * s.W, C = s.C, PQ = s.P() * s.Q();
  fill(dinp, 0.f, static_cast<size_t>(s.N) * HW * C);
  // Windows overlap (kernel 3 > stride 2), so one input pixel receives several outputs'
  // gradients: the scatter is split by (image, channel block), which no two threads share.
  constexpr int kChannelBlock = 64;
  const int blocks = (C + kChannelBlock - 1) / kChannelBlock;
  const int64_t tasks = static_cast<int64_t>(s.N) * blocks;
  const int nth = threads_for(static_cast<int64_t>(s.N) * PQ * C);
  int bad_index = 0;
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1) reduction(| : bad_index)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t n = task / blocks;
    const int c_begin = static_cast<int>(task % blocks) * kChannelBlock;
    const int c_end = std::min(c_begin + kChannelBlock, C);
    float* image_grad = dinp + n * HW * C;
    for (int pq = 0; pq < PQ; ++pq) {
      const int64_t base = (n * PQ + pq) * C;
      for (int c = c_begin; c < c_end; ++c) {
        const int32_t index = argmax[base + c];
        if (index < 0 || index >= HW) {
          bad_index = 1;
          continue;
        }
        image_grad[static_cast<int64_t>(index) * C + c] += dout[base + c];
      }
    }
  }
  BYOL_CHECK(!bad_index, op, ": argmax holds an index outside [0, H*W = ", HW,
             "); it must come from maxpool2d_forward with the same shape");
}

void CpuBackend::avgpool_forward(float* out, const float* inp, int N, int HW, int C) {
  const char* op = "avgpool_forward";
  const OpClock op_clock(this, op);
  BYOL_CHECK(N > 0 && HW > 0 && C > 0, op, ": expected N, HW, C > 0 but received N=", N,
             ", HW=", HW, ", C=", C);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, inp);
  use_threads();
  // Per-thread double sums, allocated here: nothing inside a parallel region may throw.
  ThreadAccumulators sums(std::max(1, omp_get_max_threads()), C);
  parallel_blocks(N, static_cast<int64_t>(N) * HW * C, [&](int64_t begin, int64_t end) {
    double* sum = sums.get(omp_get_thread_num());
    for (int64_t n = begin; n < end; ++n)
      avgpool_image_kernel(out + n * C, sum, inp + n * HW * C, HW, C);
  });
}

void CpuBackend::avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) {
  const char* op = "avgpool_backward";
  const OpClock op_clock(this, op);
  BYOL_CHECK(N > 0 && HW > 0 && C > 0, op, ": expected N, HW, C > 0 but received N=", N,
             ", HW=", HW, ", C=", C);
  BYOL_CPU_CHECK_PTR(op, dinp);
  BYOL_CPU_CHECK_PTR(op, dout);
  use_threads();
  const int64_t rows = static_cast<int64_t>(N) * HW;
  parallel_blocks(rows, rows * C, [&](int64_t begin, int64_t end) {
    avgpool_backward_kernel(dinp, dout, begin, end, HW, C);
  });
}

}  // namespace cpu
}  // namespace byol
