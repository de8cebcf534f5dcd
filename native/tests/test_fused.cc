// test_fused.cc: batch norm with its epilogue (BnEpilogue: + residual, ReLU) and the backward
// through the fused ReLU, against the same computation as separate ops (batch norm, add,
// relu_forward; relu_backward, batch norm backward) on the same backend: bit-identical on the
// CPU; on a GPU the fused CUDA ops are also checked against the CPU's separate ops.
#include <cmath>
#include <limits>
#include <random>

#include "byol/tensor.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::Backend;
using byol::BnEpilogue;
using byol::DType;
using byol::Tensor;

struct Shape {
  int M, C;
};
// Rows and channels around the CUDA kernels' 32-channel tiles and row chunks, and an MLP-like
// (B, hidden) case.
const Shape kShapes[] = {{2, 3}, {37, 33}, {256, 64}, {128, 100}, {4096, 16}};

std::vector<float> normal(size_t n, uint32_t seed, float mean = 0.0f, float stddev = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

Tensor up(Backend* b, const std::vector<float>& v) {
  return Tensor::from_host(b, v.data(), {static_cast<int64_t>(v.size())}, DType::f32);
}

struct Inputs {
  std::vector<float> x, gamma, beta, residual, dout, rmean, rvar;
};

Inputs make_inputs(const Shape& s, uint32_t seed) {
  const size_t n = size_t(s.M) * s.C;
  Inputs in;
  in.x = normal(n, seed, 0.5f, 2.0f);
  in.gamma = normal(s.C, seed + 1, 1.0f, 0.5f);
  in.beta = normal(s.C, seed + 2, 0.0f, 0.5f);
  in.residual = normal(n, seed + 3);
  in.dout = normal(n, seed + 4);
  in.rmean = normal(s.C, seed + 5, 0.0f, 0.1f);
  in.rvar = normal(s.C, seed + 6, 1.0f, 0.1f);
  for (float& v : in.rvar) v = std::fabs(v) + 0.1f;
  // A NaN in the shortcut must come through the add and the ReLU (a diverged step stays visible).
  if (n > 5) in.residual[5] = std::numeric_limits<float>::quiet_NaN();
  return in;
}

struct Outputs {
  std::vector<float> out, mean, rstd, rmean, rvar, out_eval, dinp, dgamma, dbeta;
};

// fused: one call per direction with the epilogue; else the separate ops.
Outputs run(Backend* b, const Shape& s, const Inputs& in, bool residual, bool relu, bool fused) {
  const size_t n = size_t(s.M) * s.C;
  Tensor x = up(b, in.x), gamma = up(b, in.gamma), beta = up(b, in.beta), res = up(b, in.residual);
  Tensor dout = up(b, in.dout), rmean = up(b, in.rmean), rvar = up(b, in.rvar);
  Tensor out = Tensor::zeros(b, {int64_t(n)}), mean = Tensor::zeros(b, {s.C}), rstd = Tensor::zeros(b, {s.C});
  Tensor out_eval = Tensor::zeros(b, {int64_t(n)});
  Tensor dinp = Tensor::zeros(b, {int64_t(n)}), dgamma = Tensor::zeros(b, {s.C}), dbeta = Tensor::zeros(b, {s.C});
  const BnEpilogue ep{residual ? res.f32() : nullptr, relu};
  const float momentum = 0.1f, eps = 1e-5f;
  if (fused) {
    b->batchnorm_forward_train(out.f32(), mean.f32(), rstd.f32(), rmean.f32(), rvar.f32(), x.f32(), gamma.f32(),
                               beta.f32(), s.M, s.C, momentum, eps, ep);
    b->batchnorm_forward_eval(out_eval.f32(), x.f32(), gamma.f32(), beta.f32(), rmean.f32(), rvar.f32(), s.M, s.C,
                              eps, ep);
    b->batchnorm_backward(dinp.f32(), dgamma.f32(), dbeta.f32(), dout.f32(), x.f32(), mean.f32(), rstd.f32(),
                          gamma.f32(), s.M, s.C, false, relu ? out.f32() : nullptr);
  } else {
    auto epilogue = [&](Tensor& t) {
      if (residual) b->add(t.f32(), t.f32(), res.f32(), n);
      if (relu) b->relu_forward(t.f32(), t.f32(), n);
    };
    b->batchnorm_forward_train(out.f32(), mean.f32(), rstd.f32(), rmean.f32(), rvar.f32(), x.f32(), gamma.f32(),
                               beta.f32(), s.M, s.C, momentum, eps, BnEpilogue{});
    epilogue(out);
    b->batchnorm_forward_eval(out_eval.f32(), x.f32(), gamma.f32(), beta.f32(), rmean.f32(), rvar.f32(), s.M, s.C,
                              eps, BnEpilogue{});
    epilogue(out_eval);
    Tensor masked = up(b, in.dout);
    if (relu) b->relu_backward(masked.f32(), masked.f32(), out.f32(), n);
    b->batchnorm_backward(dinp.f32(), dgamma.f32(), dbeta.f32(), masked.f32(), x.f32(), mean.f32(), rstd.f32(),
                          gamma.f32(), s.M, s.C, false, nullptr);
  }
  return {out.to_vector_f32(),      mean.to_vector_f32(),  rstd.to_vector_f32(),  rmean.to_vector_f32(),
          rvar.to_vector_f32(),     out_eval.to_vector_f32(), dinp.to_vector_f32(), dgamma.to_vector_f32(),
          dbeta.to_vector_f32()};
}

// Max |a - b| over two vectors, with NaN == NaN and NaN != number counted as infinite.
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) {
      if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
      continue;
    }
    worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  }
  return worst;
}

double worst_of(const Outputs& a, const Outputs& b, std::string* where) {
  const std::pair<const char*, std::pair<const std::vector<float>*, const std::vector<float>*>> parts[] = {
      {"out", {&a.out, &b.out}},         {"save_mean", {&a.mean, &b.mean}}, {"save_rstd", {&a.rstd, &b.rstd}},
      {"running_mean", {&a.rmean, &b.rmean}}, {"running_var", {&a.rvar, &b.rvar}},
      {"out_eval", {&a.out_eval, &b.out_eval}}, {"dinp", {&a.dinp, &b.dinp}}, {"dgamma", {&a.dgamma, &b.dgamma}},
      {"dbeta", {&a.dbeta, &b.dbeta}}};
  double worst = 0;
  for (const auto& p : parts) {
    const double d = max_diff(*p.second.first, *p.second.second);
    if (d > worst) worst = d, *where = p.first;
  }
  return worst;
}

std::string label(const Shape& s, bool residual, bool relu) {
  return "M=" + std::to_string(s.M) + " C=" + std::to_string(s.C) + (residual ? " +residual" : "") +
         (relu ? " +relu" : "");
}

BYOL_TEST("fused/batchnorm_epilogue@cpu", ctx) {
  uint32_t seed = 1;
  for (const Shape& s : kShapes) {
    const Inputs in = make_inputs(s, seed += 10);
    for (int mode = 1; mode < 4; ++mode) {
      const bool residual = mode & 1, relu = mode & 2;
      std::string where;
      const double d = worst_of(run(ctx.cpu, s, in, residual, relu, true), run(ctx.cpu, s, in, residual, relu, false),
                                &where);
      byol_test::expect_true(d == 0, "fused = separate ops, bit for bit: " + label(s, residual, relu),
                             d == 0 ? "" : "max |diff| " + std::to_string(d) + " in " + where);
    }
  }
  // The NaN in the shortcut survives the fused add and ReLU.
  const Shape s = kShapes[1];
  const Outputs o = run(ctx.cpu, s, make_inputs(s, 3), true, true, true);
  byol_test::expect_true(std::isnan(o.out[5]) && std::isnan(o.out_eval[5]), "NaN passes the fused add and ReLU");
  // The comparison can fail: a residual is not a no-op.
  std::string where;
  const Inputs in = make_inputs(s, 4);
  byol_test::expect_true(worst_of(run(ctx.cpu, s, in, true, false, true), run(ctx.cpu, s, in, false, false, true),
                                  &where) > 0.1,
                         "the epilogue changes the output (control)");
}

// The CUDA ops with their epilogues against the CPU's separate ops (FP32; the batch norm
// reductions differ in order, as in the op table: kReduction-like bounds). `gpu` is the CUDA
// backend or its kernels under the emulator (@emu).
void fused_vs_cpu(byol_test::Context& ctx, byol::Backend* gpu) {
  uint32_t seed = 101;
  for (const Shape& s : kShapes) {
    const Inputs in = make_inputs(s, seed += 10);
    for (int mode = 1; mode < 4; ++mode) {
      const bool residual = mode & 1, relu = mode & 2;
      const Outputs fused = run(gpu, s, in, residual, relu, true);
      const Outputs separate = run(gpu, s, in, residual, relu, false);
      const Outputs cpu = run(ctx.cpu, s, in, residual, relu, false);
      std::string where;
      const double vs_separate = worst_of(fused, separate, &where);
      byol_test::expect_true(vs_separate == 0, "cuda fused = cuda separate ops: " + label(s, residual, relu),
                             "max |diff| " + std::to_string(vs_separate) + " in " + where);
      const double vs_cpu = worst_of(fused, cpu, &where);
      // dinp/dgamma/dbeta scale with M (sums over rows); 1e-3 absolute covers M = 4096 with
      // float partial sums, as the op table's kReduction bound does per element.
      byol_test::expect_true(vs_cpu <= 1e-3, "cuda fused vs cpu separate ops: " + label(s, residual, relu),
                             "max |diff| " + std::to_string(vs_cpu) + " in " + where);
    }
  }
}

BYOL_TEST("fused/batchnorm_epilogue@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  fused_vs_cpu(ctx, ctx.cuda);
}

BYOL_TEST("fused/batchnorm_epilogue@emu", ctx) { fused_vs_cpu(ctx, ctx.emu); }

}  // namespace
