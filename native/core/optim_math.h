// optim_math.h: the arithmetic and argument checks of the optimizer updates (LARS, SGD, AdamW)
// shared by the CPU backend (cpu/optim_cpu.cc) and the CUDA kernels (cuda/kernels/optim.cu).
// Contract: the element functions are the whole per-element formula; backends only choose the
// indices and reduce the LARS norms. Every float operation rounds once, in the written order
// (the device uses the _rn intrinsics, so nvcc cannot fuse a*b + c), which makes the element
// results bit-identical on both backends given equal inputs (and, for LARS, equal norms).
#pragma once
#include <cmath>
#include <cstdint>

#include "byol/backend.h"
#include "byol/error.h"

#ifndef BYOL_HD
#if defined(__CUDACC__)
#define BYOL_HD __host__ __device__ __forceinline__
#else
#define BYOL_HD inline
#endif
#endif

namespace byol {
namespace optim {

// ---- single-rounding operations ------------------------------------------------------------
// The host side is plain IEEE arithmetic: the x86-64 builds have no -mfma, so GCC never
// contracts. (A build with FMA on the host would contract there and no longer match the device
// bit for bit; the update stays correct, only the last bit moves.)
BYOL_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
BYOL_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
BYOL_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
BYOL_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
BYOL_HD float sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
BYOL_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
BYOL_HD double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
BYOL_HD double div(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
BYOL_HD double sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// The learning rate of this update: read from backend memory when the options point there
// (backend.h), else the host value. Called where the memory is readable: on the CPU, or on the
// device inside a kernel (never on the host side of the CUDA backend).
template <typename Options>
BYOL_HD float step_lr(const Options& opt) {
  return opt.lr_device ? *opt.lr_device : opt.lr;
}

// ---- LARS ----------------------------------------------------------------------------------
// Per segment with decay = true (reference mode): g' = g + wd*p; u = g' * eta*|p|/(|g'| + eps)
// when both norms are > 0 (else u = g'); m = momentum*m + u; p -= lr*m. decay = false: u = g.
// solo_learn: for decay segments with |p|, |g| > 0, u = (g + wd*p) * eta*|p| / (|g| + wd*|p| + eps),
// else u = g (solo-learn adds weight decay only where it applies the trust ratio).

// Adds element i's terms to the segment's sums of squares: |p|^2 and |g'|^2 with g' = g + wd*p
// (reference) or g (solo-learn), g' rounded to float exactly as lars_element uses it. Sums are
// double: a segment holds up to millions of terms, and float(p)*float(p) is exact in double.
BYOL_HD void lars_norm_terms(const float* params, const float* grads, int64_t i, float weight_decay,
                             bool solo_learn, double& sum_sq_params, double& sum_sq_grads) {
  const float p = params[i];
  const float g = solo_learn ? grads[i] : add(grads[i], mul(weight_decay, p));
  sum_sq_params = add(sum_sq_params, mul(double(p), double(p)));
  sum_sq_grads = add(sum_sq_grads, mul(double(g), double(g)));
}

// What one segment applies to its gradient: u = (g + wd*p) * scale when add_decay, else u = g.
struct LarsScale {
  float scale = 1.0f;
  int add_decay = 0;  // int, not bool: the CUDA kernels keep an array of these in device memory
};

// The segment's scale from its complete sums of squares.
BYOL_HD LarsScale lars_segment_scale(double sum_sq_params, double sum_sq_grads, bool decay,
                                     const LarsOptions& opt) {
  LarsScale s;
  if (!decay) return s;
  const double pn = sqrt(sum_sq_params), gn = sqrt(sum_sq_grads);
  const double eta = opt.trust_coefficient, wd = opt.weight_decay, eps = opt.eps;
  if (opt.solo_learn) {
    if (pn > 0 && gn > 0) {
      s.scale = static_cast<float>(div(mul(eta, pn), add(add(gn, mul(wd, pn)), eps)));
      s.add_decay = 1;
    }
  } else {
    s.add_decay = 1;
    // The reference implementation has no epsilon: a zero norm means no trust ratio.
    if (pn > 0 && gn > 0) s.scale = static_cast<float>(div(mul(eta, pn), add(gn, eps)));
  }
  return s;
}

// Element i: u as above; m = momentum*m + u; p -= lr*m. `lr` is step_lr(opt).
BYOL_HD void lars_element(float* params, float* momentum, const float* grads, int64_t i, LarsScale s,
                          const LarsOptions& opt, float lr) {
  const float p = params[i];
  float u = grads[i];
  if (s.add_decay) u = mul(add(u, mul(opt.weight_decay, p)), s.scale);
  const float m = add(mul(opt.momentum, momentum[i]), u);
  momentum[i] = m;
  params[i] = sub(p, mul(lr, m));
}

// ---- SGD (torch.optim.SGD, dampening 0) ------------------------------------------------------
// d = g (+ wd*p on decay segments); m = momentum*m + d; d = nesterov ? d + momentum*m : m;
// p -= lr*d. momentum 0 neither reads nor writes `momentum` (it may be null then).
BYOL_HD void sgd_element(float* params, float* momentum, const float* grads, int64_t i, bool decay,
                         const SgdOptions& opt, float lr) {
  const float p = params[i];
  float d = grads[i];
  // wd == 0 skips the product, so an infinite parameter does not turn d into NaN through 0*inf.
  if (decay && opt.weight_decay != 0) d = add(d, mul(opt.weight_decay, p));
  if (opt.momentum != 0) {
    const float m = add(mul(opt.momentum, momentum[i]), d);
    momentum[i] = m;
    d = opt.nesterov ? add(d, mul(opt.momentum, m)) : m;
  }
  params[i] = sub(p, mul(lr, d));
}

// ---- AdamW (torch.optim.AdamW) ---------------------------------------------------------------
// p *= 1 - lr*wd (decay segments); m = m + (1-b1)*(g - m) (torch's lerp); v = b2*v + (1-b2)*g*g;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
struct AdamWConstants {
  float one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay;
  float lr, bias1, bias2_sqrt;  // this call's host values (bias1 = 1 - beta1^t)
  const float* lr_device;       // when set, lr is read from backend memory
  const float* bias_device;     // when set, bias1 and bias2_sqrt are
};
// What an element needs of the step: resolved once per thread (kernel) or call (CPU).
struct AdamWStepConstants {
  float step_size;     // lr / (1 - beta1^t)
  float bias2_sqrt;    // sqrt(1 - beta2^t)
  float decay_factor;  // 1 - lr*wd
};

// The bias corrections of 1-based step t: computed in double, then rounded to float. The model
// writes these two floats where AdamWOptions::bias_device points.
struct AdamWBias {
  float bias1, bias2_sqrt;
};
inline AdamWBias adamw_bias(float beta1, float beta2, int64_t step) {
  const double t = static_cast<double>(step);
  return {static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), t)),
          static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)))};
}

// Host side, once per call.
inline AdamWConstants adamw_constants(const AdamWOptions& opt) {
  AdamWConstants c;
  c.one_minus_beta1 = 1.0f - opt.beta1;
  c.beta2 = opt.beta2;
  c.one_minus_beta2 = 1.0f - opt.beta2;
  c.eps = opt.eps;
  c.weight_decay = opt.weight_decay;
  c.lr = opt.lr;
  c.bias1 = c.bias2_sqrt = 1.0f;
  if (!opt.bias_device) {
    const AdamWBias b = adamw_bias(opt.beta1, opt.beta2, opt.step);
    c.bias1 = b.bias1;
    c.bias2_sqrt = b.bias2_sqrt;
  }
  c.lr_device = opt.lr_device;
  c.bias_device = opt.bias_device;
  return c;
}

// Where the memory is readable (CPU, or inside a kernel).
BYOL_HD AdamWStepConstants adamw_step_constants(const AdamWConstants& c) {
  const float lr = c.lr_device ? *c.lr_device : c.lr;
  const float bias1 = c.bias_device ? c.bias_device[0] : c.bias1;
  AdamWStepConstants s;
  s.step_size = div(lr, bias1);
  s.bias2_sqrt = c.bias_device ? c.bias_device[1] : c.bias2_sqrt;
  s.decay_factor = sub(1.0f, mul(lr, c.weight_decay));
  return s;
}

BYOL_HD void adamw_element(float* params, float* exp_avg, float* exp_avg_sq, const float* grads, int64_t i,
                           bool decay, const AdamWConstants& c, const AdamWStepConstants& s) {
  float p = params[i];
  if (decay) p = mul(p, s.decay_factor);
  const float g = grads[i];
  const float m = add(exp_avg[i], mul(c.one_minus_beta1, sub(g, exp_avg[i])));
  const float v = add(mul(c.beta2, exp_avg_sq[i]), mul(mul(c.one_minus_beta2, g), g));
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  params[i] = sub(p, mul(s.step_size, div(m, add(div(sqrt(v), s.bias2_sqrt), c.eps))));
}

// ---- argument checks (host) ------------------------------------------------------------------
// `op` prefixes every message ("lars_update", "cuda: lars_update"). Each check_* returns the
// extent max(offset + size) of the segment table; 0 means there is nothing to update, and the
// buffer pointers are only required to be non-null when it is > 0.

inline void check_finite(const char* op, const char* name, float v) {
  BYOL_CHECK(std::isfinite(v), op, ": expected a finite ", name, " but received ", v);
}

inline int64_t check_segments(const char* op, const ParamSegment* segments, int num_segments) {
  BYOL_CHECK(num_segments >= 0, op, ": expected num_segments >= 0 but received ", num_segments);
  BYOL_CHECK(num_segments == 0 || segments != nullptr, op, ": segments is null but num_segments is ", num_segments);
  int64_t extent = 0;
  for (int s = 0; s < num_segments; ++s) {
    const ParamSegment& seg = segments[s];
    BYOL_CHECK(seg.offset >= 0 && seg.size >= 0, op, ": expected segment ", s,
               " to have offset >= 0 and size >= 0 but it has offset ", seg.offset, ", size ", seg.size);
    if (seg.offset + seg.size > extent) extent = seg.offset + seg.size;
  }
  return extent;
}

inline int64_t check_lars(const char* op, const float* params, const float* momentum, const float* grads,
                          const ParamSegment* segments, int num_segments, const LarsOptions& opt) {
  if (!opt.lr_device) check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "momentum", opt.momentum);
  check_finite(op, "trust_coefficient", opt.trust_coefficient);
  check_finite(op, "eps", opt.eps);
  const int64_t extent = check_segments(op, segments, num_segments);
  if (extent > 0) BYOL_CHECK(params && momentum && grads, op, ": params, momentum and grads must not be null");
  return extent;
}

inline int64_t check_sgd(const char* op, const float* params, const float* momentum, const float* grads,
                         const ParamSegment* segments, int num_segments, const SgdOptions& opt) {
  if (!opt.lr_device) check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "momentum", opt.momentum);
  const int64_t extent = check_segments(op, segments, num_segments);
  if (extent > 0) {
    BYOL_CHECK(params && grads, op, ": params and grads must not be null");
    BYOL_CHECK(opt.momentum == 0 || momentum, op, ": momentum buffer is null but momentum is ", opt.momentum);
  }
  return extent;
}

inline int64_t check_adamw(const char* op, const float* params, const float* state, const float* grads,
                           const ParamSegment* segments, int num_segments, const AdamWOptions& opt) {
  if (!opt.lr_device) check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "beta1", opt.beta1);
  check_finite(op, "beta2", opt.beta2);
  check_finite(op, "eps", opt.eps);
  if (!opt.bias_device) BYOL_CHECK(opt.step >= 1, op, ": expected step >= 1 (1-based) but received ", opt.step);
  BYOL_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1, op,
             ": expected beta1 and beta2 in [0, 1) but received ", opt.beta1, ", ", opt.beta2);
  const int64_t extent = check_segments(op, segments, num_segments);
  if (extent > 0) BYOL_CHECK(params && state && grads, op, ": params, state and grads must not be null");
  return extent;
}

}  // namespace optim
}  // namespace byol
