// test_optim_cuda.cc: the CUDA optimizer updates (lars/sgd/adamw_update) against the CPU backend
// on a segment table built for the kernels' edges: segments of 1, 255, 257, 4096, 4097 and 70001
// floats (not multiples of the 256-thread block or of the 4096-float chunk), an empty segment,
// excluded ones (decay = false), a zero-gradient and a zero-parameter segment (the trust ratio's
// fallback), a gap no segment covers, and a table listed out of memory order.
// Both backends run the element formulas of core/optim_math.h with single roundings, so every
// element that does not depend on a LARS norm must match bit for bit; LARS scales differ only by
// the summation order of double norms. Cases skip visibly without a GPU;
// optim/cuda_vs_cpu/self_test shows on the CPU that the comparisons catch plausible kernel bugs.
#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "byol/backend.h"
#include "byol/tensor.h"
#include "runner.h"

namespace byol_test {
namespace {

using byol::Backend;
using byol::ParamSegment;

// kOptimChunkFloats of cuda/kernels/kernels.h: the unit of the device's first LARS pass.
constexpr int64_t kDeviceChunk = 4096;

struct Problem {
  std::vector<ParamSegment> segs;
  std::vector<float> params, grads, state;  // state: extent floats (momentum) or 2*extent (AdamW)
  int64_t extent = 0;
  std::vector<char> covered;  // per element: inside some segment
};

// Segment indices (in memory order) with a special role.
constexpr int kZeroGradSegment = 6;
constexpr int kZeroParamSegment = 7;

Problem make_problem(uint32_t seed, int state_factor) {
  struct Spec {
    int64_t size;
    bool decay;
  };
  // Memory order. A 3-float gap follows the 255-float segment.
  const Spec specs[] = {{4097, true}, {1, false}, {255, true}, {0, true},     {4096, true},
                        {257, false}, {33, true}, {5, true},   {70001, true}, {64, false}};
  Problem pr;
  int64_t offset = 0;
  for (const Spec& s : specs) {
    pr.segs.push_back({offset, s.size, s.decay});
    offset += s.size + (s.size == 255 ? 3 : 0);
  }
  pr.extent = offset;
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  pr.params.resize(pr.extent);
  pr.grads.resize(pr.extent);
  pr.state.resize(pr.extent * state_factor);
  for (float& v : pr.params) v = normal(gen);
  for (float& v : pr.grads) v = 0.01f * normal(gen);
  for (float& v : pr.state) v = 0.01f * std::fabs(normal(gen));
  const ParamSegment zg = pr.segs[kZeroGradSegment], zp = pr.segs[kZeroParamSegment];
  std::fill(pr.grads.begin() + zg.offset, pr.grads.begin() + zg.offset + zg.size, 0.f);
  std::fill(pr.params.begin() + zp.offset, pr.params.begin() + zp.offset + zp.size, 0.f);
  pr.covered.assign(pr.extent, 0);
  for (const ParamSegment& s : pr.segs) std::fill(pr.covered.begin() + s.offset, pr.covered.begin() + s.offset + s.size, 1);
  // List the table out of memory order: neither backend may assume sorted offsets.
  std::rotate(pr.segs.begin(), pr.segs.begin() + 3, pr.segs.end());
  return pr;
}

// One optimizer configuration; `update` runs step `step` (1-based) through a backend.
using UpdateFn = std::function<void(Backend* b, float* params, float* state, const float* grads,
                                    const std::vector<ParamSegment>& segs, int step)>;
struct Variant {
  std::string name;
  int state_factor = 1;     // 0: SGD without momentum, state passed as null
  bool uses_norms = false;  // LARS: decay segments depend on reduced norms
  byol::LarsOptions lars;   // for norm_free()
  UpdateFn update;
};

std::vector<Variant> variants() {
  std::vector<Variant> out;
  auto lars = [&](const std::string& name, float wd, float eps, bool solo) {
    Variant v;
    v.name = name;
    v.uses_norms = true;
    v.lars.lr = 0.7f;
    v.lars.weight_decay = wd;
    v.lars.eps = eps;
    v.lars.solo_learn = solo;
    const byol::LarsOptions o = v.lars;
    v.update = [o](Backend* b, float* p, float* st, const float* g, const std::vector<ParamSegment>& s, int) {
      b->lars_update(p, st, g, s.data(), static_cast<int>(s.size()), o);
    };
    out.push_back(v);
  };
  lars("lars reference wd=1e-2", 1e-2f, 0.f, false);
  lars("lars reference wd=0", 0.f, 0.f, false);
  lars("lars solo-learn wd=1.5e-6", 1.5e-6f, 1e-8f, true);
  auto sgd = [&](const std::string& name, float momentum, bool nesterov) {
    Variant v;
    v.name = name;
    v.state_factor = momentum == 0 ? 0 : 1;
    byol::SgdOptions o;
    o.lr = 0.3f;
    o.weight_decay = 5e-4f;
    o.momentum = momentum;
    o.nesterov = nesterov;
    v.update = [o](Backend* b, float* p, float* st, const float* g, const std::vector<ParamSegment>& s, int) {
      b->sgd_update(p, st, g, s.data(), static_cast<int>(s.size()), o);
    };
    out.push_back(v);
  };
  sgd("sgd momentum=0.9", 0.9f, false);
  sgd("sgd nesterov", 0.9f, true);
  sgd("sgd momentum=0 (null state)", 0.f, false);
  auto adamw = [&](const std::string& name, int64_t first_step) {
    Variant v;
    v.name = name;
    v.state_factor = 2;
    byol::AdamWOptions o;
    o.lr = 1e-3f;
    o.weight_decay = 0.05f;
    v.update = [o, first_step](Backend* b, float* p, float* st, const float* g, const std::vector<ParamSegment>& s,
                               int step) {
      byol::AdamWOptions at = o;
      at.step = first_step + step - 1;
      b->adamw_update(p, st, g, s.data(), static_cast<int>(s.size()), at);
    };
    out.push_back(v);
  };
  adamw("adamw from step 1", 1);
  adamw("adamw from step 1000", 1000);
  return out;
}

struct Result {
  std::vector<float> params, state;
};

Result run(Backend* b, const Problem& pr, const Variant& v, const UpdateFn& update, int steps) {
  const std::vector<int64_t> shape = {pr.extent};
  byol::Tensor params = byol::Tensor::from_host(b, pr.params.data(), shape, byol::DType::f32);
  byol::Tensor grads = byol::Tensor::from_host(b, pr.grads.data(), shape, byol::DType::f32);
  byol::Tensor state;
  if (v.state_factor > 0)
    state = byol::Tensor::from_host(b, pr.state.data(), {pr.extent * v.state_factor}, byol::DType::f32);
  for (int step = 1; step <= steps; ++step)
    update(b, params.f32(), v.state_factor > 0 ? state.f32() : nullptr, grads.f32(), pr.segs, step);
  b->synchronize();
  Result r;
  r.params = params.to_vector_f32();
  if (v.state_factor > 0) r.state = state.to_vector_f32();
  check(v.name + ": grads (input unchanged)", grads.to_vector_f32(), pr.grads, 0.f, 0.f);
  return r;
}

// Segments whose LARS update does not depend on a norm at the first step: decay = false, or a
// zero |p| or |g'| (the scale falls back to 1). Computed in double from the problem's data.
std::vector<char> norm_free(const Problem& pr, const byol::LarsOptions& o) {
  std::vector<char> out;
  for (const ParamSegment& s : pr.segs) {
    double pn = 0, gn = 0;
    for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
      const double g = o.solo_learn ? pr.grads[i] : pr.grads[i] + double(o.weight_decay) * pr.params[i];
      pn += double(pr.params[i]) * pr.params[i];
      gn += g * g;
    }
    out.push_back(!s.decay || pn == 0 || gn == 0);
  }
  return out;
}

// Appends buffer[i] for every i of the selected segments (offset by `base` in the buffer).
void gather(std::vector<float>* out, const std::vector<float>& buffer, const Problem& pr,
            const std::vector<char>& selected, int64_t base) {
  for (size_t s = 0; s < pr.segs.size(); ++s)
    if (selected[s])
      for (int64_t i = pr.segs[s].offset; i < pr.segs[s].offset + pr.segs[s].size; ++i) out->push_back(buffer[base + i]);
}

// Compares `device_update` on `device` with the variant's own update on `cpu` after `steps`
// steps: bit-exact where no norm is involved, tight tolerances where LARS norms are. Also checks
// that elements outside every segment stay untouched and that the device repeats its bits.
void compare(Backend* device, Backend* cpu, const Problem& pr, const Variant& v, const UpdateFn& device_update,
             int steps) {
  const std::string tag = v.name + " x" + std::to_string(steps) + ": ";
  const Result want = run(cpu, pr, v, v.update, steps);
  const Result got = run(device, pr, v, device_update, steps);
  const int factor = v.state_factor;
  if (!v.uses_norms) {
    check(tag + "params", got.params, want.params, 0.f, 0.f);
    if (factor > 0) check(tag + "state", got.state, want.state, 0.f, 0.f);
  } else {
    // After the first step every parameter has moved, so only decay = false stays norm-free.
    std::vector<char> exact = norm_free(pr, v.lars);
    if (steps > 1)
      for (size_t s = 0; s < exact.size(); ++s) exact[s] = !pr.segs[s].decay;
    std::vector<char> reduced(exact.size());
    for (size_t s = 0; s < exact.size(); ++s) reduced[s] = !exact[s];
    for (int part = 0; part < 2; ++part) {
      const std::vector<char>& which = part == 0 ? exact : reduced;
      std::vector<float> gp, wp, gm, wm;
      gather(&gp, got.params, pr, which, 0);
      gather(&wp, want.params, pr, which, 0);
      gather(&gm, got.state, pr, which, 0);
      gather(&wm, want.state, pr, which, 0);
      if (part == 0) {
        check(tag + "params of norm-free segments", gp, wp, 0.f, 0.f);
        check(tag + "momentum of norm-free segments", gm, wm, 0.f, 0.f);
      } else {
        // Double norms summed in another order round the float scale differently in at most
        // the last bit (6e-8 relative). Updates are ~1e-3 of parameters ~1 and momenta ~1e-3,
        // so 1e-6 relative is ~20x that, while a wrong norm or segment moves values by O(1).
        check(tag + "params of trust-ratio segments", gp, wp, 1e-7f, 1e-6f);
        check(tag + "momentum of trust-ratio segments", gm, wm, 1e-10f, 1e-6f);
      }
    }
  }
  // Gaps: no segment covers them, so no backend may write them.
  std::vector<float> gap_got, gap_want;
  for (int64_t i = 0; i < pr.extent; ++i) {
    if (pr.covered[i]) continue;
    gap_got.push_back(got.params[i]);
    gap_want.push_back(pr.params[i]);
    for (int k = 0; k < factor; ++k) {
      gap_got.push_back(got.state[k * pr.extent + i]);
      gap_want.push_back(pr.state[k * pr.extent + i]);
    }
  }
  check(tag + "elements outside every segment untouched", gap_got, gap_want, 0.f, 0.f);
  // No atomics in float sums: a second run gives the same bits whatever the launch timing.
  const Result again = run(device, pr, v, device_update, steps);
  expect_true(again.params == got.params && again.state == got.state, tag + "same bits on a second run");
}

Backend* cuda_or_skip(Context& ctx) {
  if (!ctx.cuda) skip("no CUDA backend on this machine");
  return ctx.cuda;
}

void updates_vs_cpu(Context& ctx, Backend* gpu) {
  for (const Variant& v : variants()) {
    const Problem pr = make_problem(21, v.state_factor);
    compare(gpu, ctx.cpu, pr, v, v.update, 1);
    compare(gpu, ctx.cpu, pr, v, v.update, 3);
  }
}

BYOL_TEST("optim/cuda_vs_cpu/updates@cuda", ctx) { updates_vs_cpu(ctx, cuda_or_skip(ctx)); }
// The same kernels under the emulator (cuda_emu/): their indexing and chunk tables on any machine.
BYOL_TEST("optim/cuda_vs_cpu/updates@emu", ctx) { updates_vs_cpu(ctx, ctx.emu); }

// The device caches its copy of a segment table. It must follow the table's content, not the
// host pointer (the same vector rewritten in place), and survive eviction (more distinct tables
// than the cache holds, then the first one again).
BYOL_TEST("optim/cuda_vs_cpu/segment_table_cache@cuda", ctx) {
  Backend* cuda = cuda_or_skip(ctx);
  const Variant lars = variants()[0];
  const Problem base = make_problem(22, 1);
  Result results[2];
  for (int k = 0; k < 2; ++k) {
    Backend* b = k == 0 ? ctx.cpu : cuda;
    byol::Tensor params = byol::Tensor::from_host(b, base.params.data(), {base.extent}, byol::DType::f32);
    byol::Tensor grads = byol::Tensor::from_host(b, base.grads.data(), {base.extent}, byol::DType::f32);
    byol::Tensor momentum = byol::Tensor::from_host(b, base.state.data(), {base.extent}, byol::DType::f32);
    std::vector<ParamSegment> table = base.segs;  // one host array, rewritten in place
    auto step = [&] { lars.update(b, params.f32(), momentum.f32(), grads.f32(), table, 1); };
    step();
    for (ParamSegment& s : table) s.decay = !s.decay;
    step();
    for (int variant = 0; variant < 10; ++variant) {
      table = base.segs;
      table.back().size = std::max<int64_t>(0, table.back().size - 1 - variant);
      step();
    }
    table = base.segs;
    step();
    b->synchronize();
    results[k].params = params.to_vector_f32();
    results[k].state = momentum.to_vector_f32();
  }
  check("params after 13 steps over 12 tables", results[1].params, results[0].params, 1e-6f, 1e-5f);
  check("momentum after 13 steps over 12 tables", results[1].state, results[0].state, 1e-9f, 1e-5f);
}

// The CUDA backend runs the CPU's own checks: same message with the "cuda: " prefix.
BYOL_TEST("optim/cuda_vs_cpu/errors@cuda", ctx) {
  Backend* cuda = cuda_or_skip(ctx);
  byol::Tensor buffer = byol::Tensor::zeros(cuda, {8});
  float* d = buffer.f32();
  float host[8] = {0};
  auto same = [&](const std::string& what, const std::function<void(Backend*, float*)>& call) {
    const std::string cpu_message = byol_test::error_message([&] { call(ctx.cpu, host); });
    const std::string cuda_message = byol_test::error_message([&] { call(cuda, d); });
    expect_true(cuda_message == "cuda: " + cpu_message, what, "cpu: '" + cpu_message + "', cuda: '" + cuda_message + "'");
  };
  const ParamSegment negative{-1, 4, true};
  const ParamSegment good{0, 8, true};
  same("negative offset", [&](Backend* b, float* p) { b->lars_update(p, p, p, &negative, 1, byol::LarsOptions{}); });
  same("NaN lr", [&](Backend* b, float* p) {
    byol::LarsOptions o;
    o.lr = NAN;
    b->lars_update(p, p, p, &good, 1, o);
  });
  same("null momentum with momentum 0.9", [&](Backend* b, float* p) {
    byol::SgdOptions o;
    o.momentum = 0.9f;
    b->sgd_update(p, nullptr, p, &good, 1, o);
  });
  same("adamw step 0", [&](Backend* b, float* p) {
    byol::AdamWOptions o;
    o.step = 0;
    b->adamw_update(p, p, p, &good, 1, o);
  });
  same("adamw beta2 = 1", [&](Backend* b, float* p) {
    byol::AdamWOptions o;
    o.beta2 = 1.0f;
    b->adamw_update(p, p, p, &good, 1, o);
  });
  // Nothing to update (extent max(offset + size) = 0): no buffer is needed, even null ones.
  cuda->lars_update(nullptr, nullptr, nullptr, nullptr, 0, byol::LarsOptions{});
  const ParamSegment empty{0, 0, true};
  cuda->adamw_update(nullptr, nullptr, nullptr, &empty, 1, byol::AdamWOptions{});
  cuda->synchronize();
  expect_true(true, "empty tables accept null buffers");
}

// Runs on the CPU: the comparisons above, with the CPU backend standing in for the device, pass
// bug-free and fail for each plausible kernel bug (so a GPU run that passes means something).
BYOL_TEST("optim/cuda_vs_cpu/self_test", ctx) {
  struct Bug {
    const char* name;
    int variant;  // index into variants()
    std::function<UpdateFn(const UpdateFn&)> inject;
  };
  using Segs = std::vector<ParamSegment>;
  auto with_table = [](std::function<Segs(const Segs&)> edit) {
    return [edit](const UpdateFn& inner) -> UpdateFn {
      return [inner, edit](Backend* b, float* p, float* st, const float* g, const Segs& s, int step) {
        inner(b, p, st, g, edit(s), step);
      };
    };
  };
  const Bug bugs[] = {
      {"lars decays excluded segments", 0, with_table([](const Segs& s) {
         Segs out = s;
         for (ParamSegment& x : out) x.decay = true;
         return out;
       })},
      {"lars trust ratio per 4096-float chunk, not per segment", 0, with_table([](const Segs& s) {
         Segs out;
         for (const ParamSegment& x : s)
           for (int64_t b = x.offset; b < x.offset + x.size; b += kDeviceChunk)
             out.push_back({b, std::min(kDeviceChunk, x.offset + x.size - b), x.decay});
         return out;
       })},
      {"lars zero-norm fallback lost (0 * eta*|p|/0 = NaN)", 1, [](const UpdateFn& inner) -> UpdateFn {
         // Without the guard, reference mode with wd = 0 divides by |g| = 0 on the zero-gradient
         // segment: its parameters and momenta become NaN, the rest is unchanged.
         return [inner](Backend* b, float* p, float* st, const float* g, const Segs& s, int step) {
           inner(b, p, st, g, s, step);
           for (const ParamSegment& x : s) {
             if (x.size == 0) continue;
             std::vector<float> seg_grads(x.size);
             b->download(seg_grads.data(), g + x.offset, x.size * sizeof(float));
             if (std::any_of(seg_grads.begin(), seg_grads.end(), [](float v) { return v != 0; })) continue;
             const std::vector<float> nan(x.size, std::nanf(""));
             b->upload(p + x.offset, nan.data(), x.size * sizeof(float));
             b->upload(st + x.offset, nan.data(), x.size * sizeof(float));
           }
         };
       }},
      {"sgd skips the last element of each segment", 3, with_table([](const Segs& s) {
         Segs out = s;
         for (ParamSegment& x : out) x.size = std::max<int64_t>(0, x.size - 1);
         return out;
       })},
      {"sgd writes past its segment (covers the gap)", 3, with_table([](const Segs& s) {
         Segs out = s;
         for (ParamSegment& x : out)
           if (x.size == 255) x.size += 3;
         return out;
       })},
      {"adamw bias correction one step off", 6, [](const UpdateFn& inner) -> UpdateFn {
         return [inner](Backend* b, float* p, float* st, const float* g, const Segs& s, int step) {
           inner(b, p, st, g, s, step + 1);
         };
       }},
  };
  const std::vector<Variant> all = variants();
  for (const Variant& v : all) {
    std::string log;
    const int failures = run_nested([&] {
      const Problem pr = make_problem(23, v.state_factor);
      compare(ctx.cpu, ctx.cpu, pr, v, v.update, 1);
      compare(ctx.cpu, ctx.cpu, pr, v, v.update, 3);
    }, &log);
    expect_true(failures == 0, "bug-free: " + v.name, failures ? log : "");
  }
  for (const Bug& bug : bugs) {
    const Variant& v = all[bug.variant];
    const UpdateFn broken = bug.inject(v.update);
    std::string log;
    const int failures = run_nested([&] {
      const Problem pr = make_problem(23, v.state_factor);
      compare(ctx.cpu, ctx.cpu, pr, v, broken, 1);
      compare(ctx.cpu, ctx.cpu, pr, v, broken, 3);
    }, &log);
    expect_true(failures > 0, std::string("caught: ") + bug.name + " (" + v.name + ")",
                std::to_string(failures) + " failed checks");
  }
}

}  // namespace
}  // namespace byol_test
