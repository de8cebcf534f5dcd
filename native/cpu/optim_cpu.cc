// optim_cpu.cc: OpenMP implementations of the optimizer updates declared in optim_cpu.h.
// The flat buffer is cut into fixed chunks that never cross a segment; norms are per-chunk
// double sums added in chunk order, so results do not depend on the thread count.
#include "optim_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace byol {
namespace cpu {

namespace {

// 16K floats: large enough that a chunk amortizes its scheduling, small enough that the
// 4096x512 projector weight spreads over every core.
constexpr int64_t kChunk = 1 << 14;
// Below this many floats in total, one thread does it all (thread wake-up costs more).
constexpr int64_t kParallelMin = 1 << 15;

struct Chunk {
  int segment;
  int64_t begin, end;  // absolute float offsets
};

// Validates the table and cuts it into chunks. Returns the extent max(offset + size).
int64_t make_chunks(const char* op, const ParamSegment* segments, int num_segments, std::vector<Chunk>* chunks) {
  BYOL_CHECK(num_segments >= 0, op, ": expected num_segments >= 0 but received ", num_segments);
  BYOL_CHECK(num_segments == 0 || segments != nullptr, op, ": segments is null but num_segments is ", num_segments);
  int64_t extent = 0;
  chunks->clear();
  for (int s = 0; s < num_segments; ++s) {
    const ParamSegment& seg = segments[s];
    BYOL_CHECK(seg.offset >= 0 && seg.size >= 0, op, ": expected segment ", s,
               " to have offset >= 0 and size >= 0 but it has offset ", seg.offset, ", size ", seg.size);
    for (int64_t b = seg.offset; b < seg.offset + seg.size; b += kChunk)
      chunks->push_back({s, b, std::min(b + kChunk, seg.offset + seg.size)});
    extent = std::max(extent, seg.offset + seg.size);
  }
  return extent;
}

void check_finite(const char* op, const char* name, float v) {
  BYOL_CHECK(std::isfinite(v), op, ": expected a finite ", name, " but received ", v);
}

bool parallel(int64_t extent) { return extent >= kParallelMin && omp_get_max_threads() > 1; }

}  // namespace

void lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                 int num_segments, const LarsOptions& opt) {
  const char* op = "lars_update";
  check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "momentum", opt.momentum);
  check_finite(op, "trust_coefficient", opt.trust_coefficient);
  check_finite(op, "eps", opt.eps);
  std::vector<Chunk> chunks;
  const int64_t extent = make_chunks(op, segments, num_segments, &chunks);
  if (extent == 0) return;
  BYOL_CHECK(params && momentum && grads, op, ": params, momentum and grads must not be null");
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  const float wd = opt.weight_decay;

  // Pass 1: |p|^2 and |g'|^2 per chunk, where g' = g + wd*p (reference) or g (solo-learn),
  // only for segments that get the trust ratio.
  std::vector<double> sq_p(num_chunks, 0.0), sq_g(num_chunks, 0.0);
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    if (!segments[ch.segment].decay) continue;
    double sp = 0, sg = 0;
    for (int64_t i = ch.begin; i < ch.end; ++i) {
      const float p = params[i];
      // Rounded to float exactly as the update below will use it.
      const float g = opt.solo_learn ? grads[i] : grads[i] + wd * p;
      sp += static_cast<double>(p) * p;
      sg += static_cast<double>(g) * g;
    }
    sq_p[c] = sp;
    sq_g[c] = sg;
  }

  // Per segment: the scale applied to the (decayed) gradient, and whether wd is added.
  std::vector<double> norm_p(num_segments, 0.0), norm_g(num_segments, 0.0);
  for (int64_t c = 0; c < num_chunks; ++c) {
    norm_p[chunks[c].segment] += sq_p[c];
    norm_g[chunks[c].segment] += sq_g[c];
  }
  std::vector<float> scale(num_segments, 1.0f);
  std::vector<char> add_decay(num_segments, 0);
  for (int s = 0; s < num_segments; ++s) {
    if (!segments[s].decay) continue;
    const double pn = std::sqrt(norm_p[s]), gn = std::sqrt(norm_g[s]);
    if (opt.solo_learn) {
      // solo-learn adds weight decay only where it applies the trust ratio.
      if (pn > 0 && gn > 0) {
        scale[s] = static_cast<float>(opt.trust_coefficient * pn / (gn + wd * pn + opt.eps));
        add_decay[s] = 1;
      }
    } else {
      add_decay[s] = 1;
      // The reference implementation has no epsilon: a zero norm means no trust ratio.
      if (pn > 0 && gn > 0) scale[s] = static_cast<float>(opt.trust_coefficient * pn / (gn + opt.eps));
    }
  }

  // Pass 2: momentum and parameter update.
  const float mu = opt.momentum, lr = opt.lr;
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const float k = scale[ch.segment];
    const bool decay = add_decay[ch.segment] != 0;
    for (int64_t i = ch.begin; i < ch.end; ++i) {
      float g = grads[i];
      if (decay) g = (g + wd * params[i]) * k;
      const float m = mu * momentum[i] + g;
      momentum[i] = m;
      params[i] = params[i] - lr * m;
    }
  }
}

void sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments, int num_segments,
                const SgdOptions& opt) {
  const char* op = "sgd_update";
  check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "momentum", opt.momentum);
  std::vector<Chunk> chunks;
  const int64_t extent = make_chunks(op, segments, num_segments, &chunks);
  if (extent == 0) return;
  BYOL_CHECK(params && grads, op, ": params and grads must not be null");
  BYOL_CHECK(opt.momentum == 0 || momentum, op, ": momentum buffer is null but momentum is ", opt.momentum);
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  const float wd = opt.weight_decay, mu = opt.momentum, lr = opt.lr;
  const bool nesterov = opt.nesterov;
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const bool decay = segments[ch.segment].decay && wd != 0;
    for (int64_t i = ch.begin; i < ch.end; ++i) {
      float d = grads[i];
      if (decay) d = d + wd * params[i];
      if (mu != 0) {
        const float m = mu * momentum[i] + d;
        momentum[i] = m;
        d = nesterov ? d + mu * m : m;
      }
      params[i] = params[i] - lr * d;
    }
  }
}

void adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments, int num_segments,
                  const AdamWOptions& opt) {
  const char* op = "adamw_update";
  check_finite(op, "lr", opt.lr);
  check_finite(op, "weight_decay", opt.weight_decay);
  check_finite(op, "beta1", opt.beta1);
  check_finite(op, "beta2", opt.beta2);
  check_finite(op, "eps", opt.eps);
  BYOL_CHECK(opt.step >= 1, op, ": expected step >= 1 (1-based) but received ", opt.step);
  BYOL_CHECK(opt.beta1 >= 0 && opt.beta1 < 1 && opt.beta2 >= 0 && opt.beta2 < 1, op,
             ": expected beta1 and beta2 in [0, 1) but received ", opt.beta1, ", ", opt.beta2);
  std::vector<Chunk> chunks;
  const int64_t extent = make_chunks(op, segments, num_segments, &chunks);
  if (extent == 0) return;
  BYOL_CHECK(params && state && grads, op, ": params, state and grads must not be null");
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  float* exp_avg = state;
  float* exp_avg_sq = state + extent;
  const float b1 = opt.beta1, b2 = opt.beta2, lr = opt.lr, eps = opt.eps;
  const double t = static_cast<double>(opt.step);
  const float bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), t));
  const float bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(b2), t)));
  const float step_size = lr / bias1;
  const float decay_factor = 1.0f - lr * opt.weight_decay;
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const bool decay = segments[ch.segment].decay;
    for (int64_t i = ch.begin; i < ch.end; ++i) {
      float p = params[i];
      if (decay) p *= decay_factor;
      const float g = grads[i];
      const float m = exp_avg[i] + (1.0f - b1) * (g - exp_avg[i]);  // torch: lerp_(g, 1 - b1)
      const float v = b2 * exp_avg_sq[i] + (1.0f - b2) * g * g;
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
      params[i] = p - step_size * (m / (std::sqrt(v) / bias2_sqrt + eps));
    }
  }
}

}  // namespace cpu
}  // namespace byol
