// batchnorm.cc: batch norm over the rows of an (M, C) matrix (NHWC images or 1-D features)
// in training, evaluation and backward. Contract: byol/backend.h (biased variance for
// normalizing, unbiased for the running estimate, PyTorch momentum, rstd saved).
// Statistics are summed in double: M reaches millions of rows (N*H*W) and fp32 sums
// would drift from PyTorch's well beyond 1e-5.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

void check_sizes(const char* op, int M, int C, int min_rows) {
  BYOL_CHECK(C > 0, op, ": expected C > 0 but received ", C);
  BYOL_CHECK(M >= min_rows, op, ": expected M (rows = N*H*W) >= ", min_rows, " but received ", M,
             min_rows > 1 ? " (batch statistics need more than one value per channel)" : "");
}

// out[r, c] = (inp[r, c] - center[c]) * scale[c] + offset[c] for rows [0, rows), then the
// epilogue: + residual[r, c] (when set), then ReLU (when asked) written as relu_forward's
// `v < 0 ? 0 : v` (NaN passes), so the fused result equals the separate ops bit for bit.
BYOL_CPU_KERNEL void normalize_kernel(float* out, const float* inp, const float* center,
                                      const float* scale, const float* offset,
                                      const float* residual, bool relu, int64_t rows, int C) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = inp + r * C;
    float* y = out + r * C;
    if (residual == nullptr && !relu) {
#pragma omp simd
      for (int c = 0; c < C; ++c) y[c] = (x[c] - center[c]) * scale[c] + offset[c];
    } else if (residual == nullptr) {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float v = (x[c] - center[c]) * scale[c] + offset[c];
        y[c] = v < 0.f ? 0.f : v;
      }
    } else {
      const float* res = residual + r * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float n = (x[c] - center[c]) * scale[c] + offset[c];
        const float v = n + res[c];
        y[c] = relu && v < 0.f ? 0.f : v;
      }
    }
  }
}

// Centering first (rather than folding center into offset) keeps precision when |mean|
// is large next to the spread.
void normalize_rows(float* out, const float* inp, const float* center, const float* scale,
                    const float* offset, const BnEpilogue& epilogue, int64_t M, int C) {
  parallel_blocks(M, M * C, [&](int64_t begin, int64_t end) {
    normalize_kernel(out + begin * C, inp + begin * C, center, scale, offset,
                     epilogue.residual ? epilogue.residual + begin * C : nullptr, epilogue.relu, end - begin, C);
  });
}

// Adds sum(x - shift) to s1 and sum((x - shift)^2) to s2 per channel over `rows` rows.
BYOL_CPU_KERNEL void moments_kernel(double* s1, double* s2, const float* inp,
                                    const double* shift, int64_t rows, int C) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = inp + r * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      double d = static_cast<double>(x[c]) - shift[c];
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

// relu_backward's `out > 0 ? dy : 0` as a bit mask: GCC keeps the ternary form of these loops
// scalar with a branch per element (8x slower on random masks) but vectorizes an AND. Equal
// results: all bits cleared is +0.0f, and a NaN `out` clears them too (NaN > 0 is false).
inline float relu_masked(float dy, float out) {
  uint32_t bits;
  std::memcpy(&bits, &dy, sizeof bits);
  bits &= 0u - static_cast<uint32_t>(out > 0.f);
  float g;
  std::memcpy(&g, &bits, sizeof g);
  return g;
}

// Adds sum(dy) to s_dy and sum(dy * (x - mean)) to s_dyx per channel over `rows` rows. With
// a ReLU mask (the fused forward's output), dy counts only where mask > 0 (relu_backward).
BYOL_CPU_KERNEL void grad_sums_kernel(double* s_dy, double* s_dyx, const float* dout,
                                      const float* inp, const float* mean, const float* mask,
                                      int64_t rows, int C) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* dy = dout + r * C;
    const float* x = inp + r * C;
    if (mask == nullptr) {
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        double g = dy[c];
        s_dy[c] += g;
        s_dyx[c] += g * (static_cast<double>(x[c]) - mean[c]);
      }
    } else {
      const float* m = mask + r * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const double g = relu_masked(dy[c], m[c]);
        s_dy[c] += g;
        s_dyx[c] += g * (static_cast<double>(x[c]) - mean[c]);
      }
    }
  }
}

// dx = scale * (dy - mean_dy - (x - mean) * coef), dy masked as above; dinp may alias dout
// (each element is read before it is written).
BYOL_CPU_KERNEL void grad_input_kernel(float* dinp, const float* dout, const float* inp,
                                       const float* mean, const float* scale,
                                       const float* mean_dy, const float* coef, const float* mask,
                                       int64_t rows, int C) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* dy = dout + r * C;
    const float* x = inp + r * C;
    float* dx = dinp + r * C;
    if (mask == nullptr) {
#pragma omp simd
      for (int c = 0; c < C; ++c) dx[c] = scale[c] * (dy[c] - mean_dy[c] - (x[c] - mean[c]) * coef[c]);
    } else {
      const float* m = mask + r * C;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float g = relu_masked(dy[c], m[c]);
        dx[c] = scale[c] * (g - mean_dy[c] - (x[c] - mean[c]) * coef[c]);
      }
    }
  }
}

}  // namespace

void CpuBackend::batchnorm_forward_train(float* out, float* save_mean, float* save_rstd,
                                         float* running_mean, float* running_var,
                                         const float* inp, const float* gamma, const float* beta,
                                         int M, int C, float momentum, float eps,
                                         const BnEpilogue& epilogue) {
  const char* op = "batchnorm_forward_train";
  OpClock op_clock(this, op);
  op_clock.work([&] { return batchnorm_forward_work(M, C, true, epilogue.residual != nullptr); });
  check_sizes(op, M, C, 2);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, save_mean);
  BYOL_CPU_CHECK_PTR(op, save_rstd);
  BYOL_CPU_CHECK_PTR(op, inp);
  BYOL_CPU_CHECK_PTR(op, gamma);
  BYOL_CPU_CHECK_PTR(op, beta);
  BYOL_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
             ": expected running_mean and running_var both set or both null");
  BYOL_CHECK(eps >= 0.f, op, ": expected eps >= 0 but received ", eps);
  BYOL_CHECK(momentum >= 0.f && momentum <= 1.f, op, ": expected momentum in [0, 1] but received ",
             momentum);
  use_threads();

  // One pass, shifted by the first row: sums of (x - shift) and (x - shift)^2 give the
  // variance without the cancellation of E[x^2] - E[x]^2, since the shift is a sample of
  // the channel and therefore within a few standard deviations of its mean.
  std::vector<double> shift(inp, inp + C);
  std::vector<double> sums(2 * static_cast<size_t>(C));
  const double* shift_ptr = shift.data();
  column_reduce(M, C, 2, sums.data(), [&](int64_t begin, int64_t end, double* acc) {
    moments_kernel(acc, acc + C, inp + begin * C, shift_ptr, end - begin, C);
  });

  std::vector<float> scale(C), offset(C);
  const double rows = M;
  for (int c = 0; c < C; ++c) {
    double mean_shifted = sums[c] / rows;
    double var = std::max(sums[C + c] / rows - mean_shifted * mean_shifted, 0.0);
    double mean = shift[c] + mean_shifted;
    double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    double channel_scale = rstd * gamma[c];
    save_mean[c] = static_cast<float>(mean);
    save_rstd[c] = static_cast<float>(rstd);
    scale[c] = static_cast<float>(channel_scale);
    // Rows are centered on the float mean (x - mean_f is exact for x near the mean); the
    // offset carries back what rounding the mean to float lost, which matters when |mean|
    // is large next to the spread.
    offset[c] = static_cast<float>(beta[c] + (save_mean[c] - mean) * channel_scale);
    if (running_mean != nullptr) {
      double unbiased = var * rows / (rows - 1.0);
      running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
      running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
  normalize_rows(out, inp, save_mean, scale.data(), offset.data(), epilogue, M, C);
}

void CpuBackend::batchnorm_forward_eval(float* out, const float* inp, const float* gamma,
                                        const float* beta, const float* running_mean,
                                        const float* running_var, int M, int C, float eps,
                                        const BnEpilogue& epilogue) {
  const char* op = "batchnorm_forward_eval";
  OpClock op_clock(this, op);
  op_clock.work([&] { return batchnorm_forward_work(M, C, false, epilogue.residual != nullptr); });
  check_sizes(op, M, C, 1);
  BYOL_CPU_CHECK_PTR(op, out);
  BYOL_CPU_CHECK_PTR(op, inp);
  BYOL_CPU_CHECK_PTR(op, gamma);
  BYOL_CPU_CHECK_PTR(op, beta);
  BYOL_CPU_CHECK_PTR(op, running_mean);
  BYOL_CPU_CHECK_PTR(op, running_var);
  BYOL_CHECK(eps >= 0.f, op, ": expected eps >= 0 but received ", eps);
  use_threads();
  std::vector<float> scale(C);
  for (int c = 0; c < C; ++c)
    scale[c] = static_cast<float>(gamma[c] / std::sqrt(static_cast<double>(running_var[c]) + eps));
  normalize_rows(out, inp, running_mean, scale.data(), beta, epilogue, M, C);
}

void CpuBackend::batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                    const float* inp, const float* save_mean,
                                    const float* save_rstd, const float* gamma, int M, int C,
                                    bool accumulate, const float* relu_out) {
  const char* op = "batchnorm_backward";
  OpClock op_clock(this, op);
  op_clock.work([&] { return batchnorm_backward_work(M, C, relu_out != nullptr); });
  check_sizes(op, M, C, 1);
  BYOL_CPU_CHECK_PTR(op, dinp);
  BYOL_CPU_CHECK_PTR(op, dgamma);
  BYOL_CPU_CHECK_PTR(op, dbeta);
  BYOL_CPU_CHECK_PTR(op, dout);
  BYOL_CPU_CHECK_PTR(op, inp);
  BYOL_CPU_CHECK_PTR(op, save_mean);
  BYOL_CPU_CHECK_PTR(op, save_rstd);
  BYOL_CPU_CHECK_PTR(op, gamma);
  use_threads();

  // sum(dy) and sum(dy * (x - mean)) per channel: dbeta and dgamma / rstd.
  std::vector<double> sums(2 * static_cast<size_t>(C));
  column_reduce(M, C, 2, sums.data(), [&](int64_t begin, int64_t end, double* acc) {
    grad_sums_kernel(acc, acc + C, dout + begin * C, inp + begin * C, save_mean,
                     relu_out ? relu_out + begin * C : nullptr, end - begin, C);
  });

  // dx = gamma * rstd * (dy - mean(dy) - (x - mean) * rstd^2 * mean(dy * (x - mean))):
  // the gradient of y = gamma * xhat + beta through the batch mean and variance.
  std::vector<float> grad_scale(C), dy_mean(C), x_coef(C);
  const double rows = M;
  for (int c = 0; c < C; ++c) {
    double rstd = save_rstd[c];
    double dg = sums[C + c] * rstd;
    double db = sums[c];
    dgamma[c] = accumulate ? dgamma[c] + static_cast<float>(dg) : static_cast<float>(dg);
    dbeta[c] = accumulate ? dbeta[c] + static_cast<float>(db) : static_cast<float>(db);
    grad_scale[c] = static_cast<float>(gamma[c] * rstd);
    dy_mean[c] = static_cast<float>(db / rows);
    x_coef[c] = static_cast<float>(rstd * rstd * sums[C + c] / rows);
  }
  parallel_blocks(M, static_cast<int64_t>(M) * C, [&](int64_t begin, int64_t end) {
    grad_input_kernel(dinp + begin * C, dout + begin * C, inp + begin * C, save_mean,
                      grad_scale.data(), dy_mean.data(), x_coef.data(),
                      relu_out ? relu_out + begin * C : nullptr, end - begin, C);
  });
}

}  // namespace cpu
}  // namespace byol
