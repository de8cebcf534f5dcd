// linear_probe.cc: the linear probe's minibatch step (linear_probe.h).
#include "linear_probe.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

// logits[r * classes + c] = W[c] . x[rows[start + r]] + b[c] for r in [r0, r1): four rows at a
// time, as the reference does (its sums, in its order).
void logits_rows(double* logits, const float* x, const int32_t* rows, int64_t start, int64_t r0, int64_t r1,
                 const double* w, const double* b, int64_t dim, int classes) {
  int64_t r = r0;
  for (; r + 3 < r1; r += 4) {
    const float* x0 = x + int64_t(rows[start + r]) * dim;
    const float* x1 = x + int64_t(rows[start + r + 1]) * dim;
    const float* x2 = x + int64_t(rows[start + r + 2]) * dim;
    const float* x3 = x + int64_t(rows[start + r + 3]) * dim;
    for (int c = 0; c < classes; ++c) {
      const double* wc = w + int64_t(c) * dim;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int64_t d = 0; d < dim; ++d) {
        const double wd = wc[d];
        s0 += wd * x0[d];
        s1 += wd * x1[d];
        s2 += wd * x2[d];
        s3 += wd * x3[d];
      }
      logits[r * classes + c] = s0 + b[c];
      logits[(r + 1) * classes + c] = s1 + b[c];
      logits[(r + 2) * classes + c] = s2 + b[c];
      logits[(r + 3) * classes + c] = s3 + b[c];
    }
  }
  for (; r < r1; ++r) {
    const float* x0 = x + int64_t(rows[start + r]) * dim;
    for (int c = 0; c < classes; ++c) {
      const double* wc = w + int64_t(c) * dim;
      double s0 = 0;
      for (int64_t d = 0; d < dim; ++d) s0 += wc[d] * x0[d];
      logits[r * classes + c] = s0 + b[c];
    }
  }
}

// gradW[c] += sum_r dlogits[r, c] * x[row r] for classes [c0, c1), rows in fours.
void gradient_classes(double* grad_w, const double* dlogits, const float* x, const int32_t* rows, int64_t start,
                      int64_t count, int c0, int c1, int64_t dim, int classes) {
  int64_t r = 0;
  for (; r + 3 < count; r += 4) {
    const float* x0 = x + int64_t(rows[start + r]) * dim;
    const float* x1 = x + int64_t(rows[start + r + 1]) * dim;
    const float* x2 = x + int64_t(rows[start + r + 2]) * dim;
    const float* x3 = x + int64_t(rows[start + r + 3]) * dim;
    for (int c = c0; c < c1; ++c) {
      const double g0 = dlogits[r * classes + c], g1 = dlogits[(r + 1) * classes + c];
      const double g2 = dlogits[(r + 2) * classes + c], g3 = dlogits[(r + 3) * classes + c];
      double* gc = grad_w + int64_t(c) * dim;
      for (int64_t d = 0; d < dim; ++d) gc[d] += g0 * x0[d] + g1 * x1[d] + g2 * x2[d] + g3 * x3[d];
    }
  }
  for (; r < count; ++r) {
    const float* x0 = x + int64_t(rows[start + r]) * dim;
    for (int c = c0; c < c1; ++c) {
      const double g0 = dlogits[r * classes + c];
      double* gc = grad_w + int64_t(c) * dim;
      for (int64_t d = 0; d < dim; ++d) gc[d] += g0 * x0[d];
    }
  }
}

}  // namespace

double sgd_linear_step(const SgdLinearState& s, const float* x, const int32_t* rows, int64_t start, int64_t count,
                       const int32_t* labels, double lr, double momentum, bool nesterov, double weight_decay) {
  const int64_t dim = s.dim;
  const int classes = s.classes;
  if (count <= 0) return 0;
  std::vector<double> logits(static_cast<size_t>(count * classes));
  std::vector<double> grad_w(static_cast<size_t>(classes * dim), 0.0), grad_b(classes, 0.0);
  const int64_t work = count * classes * dim;

  // Logits: whole fours of rows per thread, so that each row is summed as the reference sums it.
  const int64_t quads = (count + 3) / 4;
  parallel_blocks(quads, work, [&](int64_t q0, int64_t q1) {
    logits_rows(logits.data(), x, rows, start, q0 * 4, std::min(count, q1 * 4), s.weights, s.bias, dim, classes);
  });

  // Softmax cross-entropy; logits become dlogits = (softmax - onehot) / count in place.
  double loss_sum = 0;
  for (int64_t r = 0; r < count; ++r) {
    double* o = logits.data() + r * classes;
    double max = -INFINITY;
    for (int c = 0; c < classes; ++c) max = std::max(max, o[c]);
    double sum = 0;
    for (int c = 0; c < classes; ++c) {
      const double e = std::exp(o[c] - max);
      o[c] = e;
      sum += e;
    }
    const int label = labels[rows[start + r]];
    loss_sum += std::log(sum) - std::log(o[label]);
    for (int c = 0; c < classes; ++c) {
      const double g = (o[c] / sum - (c == label ? 1.0 : 0.0)) / static_cast<double>(count);
      o[c] = g;
      grad_b[c] += g;
    }
  }

  // Weight gradient: classes split over threads, every row in order within each.
  parallel_blocks(classes, work, [&](int64_t c0, int64_t c1) {
    gradient_classes(grad_w.data(), logits.data(), x, rows, start, count, static_cast<int>(c0), static_cast<int>(c1),
                     dim, classes);
  });

  // PyTorch's SGD: v = mu v + g; update = g + mu v (Nesterov) or v.
  const int64_t nw = classes * dim;
  for (int64_t i = 0; i < nw; ++i) {
    const double g = grad_w[i] + weight_decay * s.weights[i];
    const double v = momentum * s.velocity_w[i] + g;
    s.velocity_w[i] = v;
    s.weights[i] -= lr * (nesterov ? g + momentum * v : v);
  }
  for (int c = 0; c < classes; ++c) {
    const double g = grad_b[c];
    const double v = momentum * s.velocity_b[c] + g;
    s.velocity_b[c] = v;
    s.bias[c] -= lr * (nesterov ? g + momentum * v : v);
  }
  return loss_sum;
}

}  // namespace cpu
}  // namespace byol
