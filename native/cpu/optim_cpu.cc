// optim_cpu.cc: OpenMP implementations of the optimizer updates declared in optim_cpu.h.
// The per-element formulas and argument checks are core/optim_math.h (shared with the CUDA
// kernels); this file only cuts the flat buffer into fixed chunks that never cross a segment.
// Norms are per-chunk double sums added in chunk order, so results do not depend on the thread count.
#include "optim_cpu.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "../core/optim_math.h"

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

// Cuts a table that optim::check_segments accepted into chunks.
std::vector<Chunk> make_chunks(const ParamSegment* segments, int num_segments) {
  std::vector<Chunk> chunks;
  for (int s = 0; s < num_segments; ++s) {
    const ParamSegment& seg = segments[s];
    for (int64_t b = seg.offset; b < seg.offset + seg.size; b += kChunk)
      chunks.push_back({s, b, std::min(b + kChunk, seg.offset + seg.size)});
  }
  return chunks;
}

bool parallel(int64_t extent) { return extent >= kParallelMin && omp_get_max_threads() > 1; }

}  // namespace

void lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                 int num_segments, const LarsOptions& opt) {
  const int64_t extent = optim::check_lars("lars_update", params, momentum, grads, segments, num_segments, opt);
  if (extent == 0) return;
  const std::vector<Chunk> chunks = make_chunks(segments, num_segments);
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());

  // Pass 1: |p|^2 and |g'|^2 per chunk, only for segments that may get the trust ratio.
  std::vector<double> sq_p(num_chunks, 0.0), sq_g(num_chunks, 0.0);
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    if (!segments[ch.segment].decay) continue;
    double sp = 0, sg = 0;
    for (int64_t i = ch.begin; i < ch.end; ++i)
      optim::lars_norm_terms(params, grads, i, opt.weight_decay, opt.solo_learn, sp, sg);
    sq_p[c] = sp;
    sq_g[c] = sg;
  }

  // Per segment: the scale applied to the (decayed) gradient, and whether wd is added.
  std::vector<double> norm_p(num_segments, 0.0), norm_g(num_segments, 0.0);
  for (int64_t c = 0; c < num_chunks; ++c) {
    norm_p[chunks[c].segment] += sq_p[c];
    norm_g[chunks[c].segment] += sq_g[c];
  }
  std::vector<optim::LarsScale> scale(num_segments);
  for (int s = 0; s < num_segments; ++s)
    scale[s] = optim::lars_segment_scale(norm_p[s], norm_g[s], segments[s].decay, opt);

  // Pass 2: momentum and parameter update.
  const float lr = optim::step_lr(opt);
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const optim::LarsScale s = scale[ch.segment];
    for (int64_t i = ch.begin; i < ch.end; ++i) optim::lars_element(params, momentum, grads, i, s, opt, lr);
  }
}

void sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments, int num_segments,
                const SgdOptions& opt) {
  const int64_t extent = optim::check_sgd("sgd_update", params, momentum, grads, segments, num_segments, opt);
  if (extent == 0) return;
  const std::vector<Chunk> chunks = make_chunks(segments, num_segments);
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  const float lr = optim::step_lr(opt);
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const bool decay = segments[ch.segment].decay;
    for (int64_t i = ch.begin; i < ch.end; ++i) optim::sgd_element(params, momentum, grads, i, decay, opt, lr);
  }
}

void adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments, int num_segments,
                  const AdamWOptions& opt) {
  const int64_t extent = optim::check_adamw("adamw_update", params, state, grads, segments, num_segments, opt);
  if (extent == 0) return;
  const std::vector<Chunk> chunks = make_chunks(segments, num_segments);
  const int64_t num_chunks = static_cast<int64_t>(chunks.size());
  float* exp_avg = state;
  float* exp_avg_sq = state + extent;
  const optim::AdamWConstants constants = optim::adamw_constants(opt);
  const optim::AdamWStepConstants step = optim::adamw_step_constants(constants);
#pragma omp parallel for schedule(static) if (parallel(extent))
  for (int64_t c = 0; c < num_chunks; ++c) {
    const Chunk& ch = chunks[c];
    const bool decay = segments[ch.segment].decay;
    for (int64_t i = ch.begin; i < ch.end; ++i)
      optim::adamw_element(params, exp_avg, exp_avg_sq, grads, i, decay, constants, step);
  }
}

}  // namespace cpu
}  // namespace byol
