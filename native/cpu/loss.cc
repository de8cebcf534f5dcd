// loss.cc: the BYOL regression loss and softmax cross-entropy, forward and backward.
// Contract: byol/backend.h and BYOL.md (n(x) = x * rsqrt(max(|x|^2, 1e-12)), mean over the
// batch). Row results are summed in a fixed order so a loss is bitwise reproducible for a
// given thread count and independent of it.
#include <cmath>
#include <vector>

#include "cpu_backend.h"
#include "parallel.h"

namespace byol {
namespace cpu {
namespace {

// The clamp on the squared norm in n(x); the reference implementation's value.
constexpr double kNormEpsSquared = 1e-12;

void check_loss_sizes(const char* op, int B, int D, const char* d_name) {
  BYOL_CHECK(B > 0, op, ": expected B > 0 but received ", B);
  BYOL_CHECK(D > 0, op, ": expected ", d_name, " > 0 but received ", D);
}

void check_labels(const char* op, const int32_t* labels, int B, int K) {
  for (int b = 0; b < B; ++b)
    BYOL_CHECK(labels[b] >= 0 && labels[b] < K, op, ": expected labels in [0, ", K,
               ") but labels[", b, "] = ", labels[b]);
}

// Per-row statistics of the BYOL loss: squared norms and the dot product, in double.
struct PairStats {
  double pp, zz, pz;
};
inline PairStats pair_stats(const float* p, const float* z, int D) {
  double pp = 0, zz = 0, pz = 0;
#pragma omp simd reduction(+ : pp, zz, pz)
  for (int d = 0; d < D; ++d) {
    pp += static_cast<double>(p[d]) * p[d];
    zz += static_cast<double>(z[d]) * z[d];
    pz += static_cast<double>(p[d]) * z[d];
  }
  return {pp, zz, pz};
}
inline double inv_norm(double squared) { return 1.0 / std::sqrt(std::max(squared, kNormEpsSquared)); }

}  // namespace

void CpuBackend::byol_loss_forward(float* loss, const float* p, const float* z, int B, int D,
                                   bool accumulate) {
  const char* op = "byol_loss_forward";
  const OpClock op_clock(this, op);
  check_loss_sizes(op, B, D, "D");
  BYOL_CPU_CHECK_PTR(op, loss);
  BYOL_CPU_CHECK_PTR(op, p);
  BYOL_CPU_CHECK_PTR(op, z);
  use_threads();
  std::vector<double> row_loss(B);
  const int nth = threads_for(static_cast<int64_t>(B) * D);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
  for (int b = 0; b < B; ++b) {
    const float* pb = p + static_cast<int64_t>(b) * D;
    const float* zb = z + static_cast<int64_t>(b) * D;
    PairStats st = pair_stats(pb, zb, D);
    const double rp = inv_norm(st.pp), rz = inv_norm(st.zz);
    // The difference itself, not 2 - 2cos: near convergence the loss is tiny and the
    // cosine form would lose it to cancellation.
    double sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int d = 0; d < D; ++d) {
      double diff = pb[d] * rp - zb[d] * rz;
      sq += diff * diff;
    }
    row_loss[b] = sq;
  }
  double total = 0;
  for (int b = 0; b < B; ++b) total += row_loss[b];
  const float value = static_cast<float>(total / B);
  *loss = accumulate ? *loss + value : value;
}

void CpuBackend::byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B,
                                    int D) {
  const char* op = "byol_loss_backward";
  const OpClock op_clock(this, op);
  check_loss_sizes(op, B, D, "D");
  BYOL_CPU_CHECK_PTR(op, dp);
  BYOL_CPU_CHECK_PTR(op, p);
  BYOL_CPU_CHECK_PTR(op, z);
  use_threads();
  const int nth = threads_for(static_cast<int64_t>(B) * D);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
  for (int b = 0; b < B; ++b) {
    const float* pb = p + static_cast<int64_t>(b) * D;
    const float* zb = z + static_cast<int64_t>(b) * D;
    float* gb = dp + static_cast<int64_t>(b) * D;
    PairStats st = pair_stats(pb, zb, D);
    const double rp = inv_norm(st.pp), rz = inv_norm(st.zz);
    // With u = n(p), v = n(z), g = dL/du = (2/B)(u - v):
    //   dp = rp * (g - u (u.g))  while |p|^2 >= 1e-12 (Jacobian of p/|p|),
    //   dp = rp * g              once clamped (the norm is then a constant).
    const double uu = st.pp * rp * rp, uv = st.pz * rp * rz;
    const double radial = st.pp >= kNormEpsSquared ? uu - uv : 0.0;  // (u.g) / (2/B)
    const double scale = static_cast<double>(dloss) * rp * 2.0 / B;
#pragma omp simd
    for (int d = 0; d < D; ++d) {
      const double u = pb[d] * rp, v = zb[d] * rz;
      gb[d] = static_cast<float>(scale * ((u - v) - u * radial));
    }
  }
}

void CpuBackend::cross_entropy_forward(float* loss, float* probs, const float* logits,
                                       const int32_t* labels, int B, int K) {
  const char* op = "cross_entropy_forward";
  const OpClock op_clock(this, op);
  check_loss_sizes(op, B, K, "K (classes)");
  BYOL_CPU_CHECK_PTR(op, loss);
  BYOL_CPU_CHECK_PTR(op, probs);
  BYOL_CPU_CHECK_PTR(op, logits);
  BYOL_CPU_CHECK_PTR(op, labels);
  check_labels(op, labels, B, K);
  use_threads();
  std::vector<double> row_loss(B);
  const int nth = threads_for(static_cast<int64_t>(B) * K);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
  for (int b = 0; b < B; ++b) {
    const float* x = logits + static_cast<int64_t>(b) * K;
    float* prob = probs + static_cast<int64_t>(b) * K;
    // Shift by the row max so exp never overflows; log-sum-exp then restores the scale.
    float max = x[0];
    for (int k = 1; k < K; ++k) max = std::max(max, x[k]);
    double sum = 0;
    for (int k = 0; k < K; ++k) {
      float e = std::exp(x[k] - max);
      prob[k] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int k = 0; k < K; ++k) prob[k] *= inv;
    row_loss[b] = static_cast<double>(max) + std::log(sum) - x[labels[b]];
  }
  double total = 0;
  for (int b = 0; b < B; ++b) total += row_loss[b];
  *loss = static_cast<float>(total / B);
}

void CpuBackend::cross_entropy_backward(float* dlogits, const float* probs, const int32_t* labels,
                                        float dloss, int B, int K) {
  const char* op = "cross_entropy_backward";
  const OpClock op_clock(this, op);
  check_loss_sizes(op, B, K, "K (classes)");
  BYOL_CPU_CHECK_PTR(op, dlogits);
  BYOL_CPU_CHECK_PTR(op, probs);
  BYOL_CPU_CHECK_PTR(op, labels);
  check_labels(op, labels, B, K);
  use_threads();
  const float scale = dloss / static_cast<float>(B);
  const int nth = threads_for(static_cast<int64_t>(B) * K);
#pragma omp parallel for schedule(static) num_threads(nth) if (nth > 1)
  for (int b = 0; b < B; ++b) {
    const float* prob = probs + static_cast<int64_t>(b) * K;
    float* g = dlogits + static_cast<int64_t>(b) * K;
#pragma omp simd
    for (int k = 0; k < K; ++k) g[k] = prob[k] * scale;
    g[labels[b]] = (prob[labels[b]] - 1.f) * scale;
  }
}

}  // namespace cpu
}  // namespace byol
