// test_conv_cpu.cc: the CPU backend's convolution weight gradient against float64 loops on the
// shapes where oneDNN 2.6 goes wrong: strided 1x1 convolutions with fewer than 8 input channels
// (the downsample shortcut of a narrow ResNet). oneDNN's jit_1x1 kernel wrote outside its
// buffers there: the first call was right, later ones off by O(1) and different each time,
// and with one thread the heap was corrupted. Each shape is run several times, with and without
// accumulate, on a 1-thread and a 2-thread backend; neighbouring shapes that oneDNN handles
// (C >= 8, 3x3) are the control.
// The im2col + SGEMM path (conv_gemm.cc) is checked the same way for all three passes, forced
// on whatever the automatic rule would pick here, with the setting that chooses it.
#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "byol/backend.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::ConvShape;
using byol_test::expect_error;
using byol_test::expect_true;

// Calls fn(y, x, w) with the flat indices of every product y[n,p,q,k] += x[n,h,w,c] * w[k,c,r,t]
// of the convolution (NHWC activations, OIHW weights): the float64 references below are sums
// over it.
template <typename Fn>
void for_each_product(const ConvShape& s, Fn&& fn) {
  const int P = s.P(), Q = s.Q();
  for (int n = 0; n < s.N; ++n)
    for (int p = 0; p < P; ++p)
      for (int q = 0; q < Q; ++q)
        for (int k = 0; k < s.K; ++k)
          for (int r = 0; r < s.R; ++r)
            for (int t = 0; t < s.S; ++t) {
              const int h = p * s.stride - s.pad + r, w = q * s.stride - s.pad + t;
              if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
              for (int c = 0; c < s.C; ++c)
                fn(((size_t(n) * P + p) * Q + q) * s.K + k, ((size_t(n) * s.H + h) * s.W + w) * s.C + c,
                   ((size_t(k) * s.C + c) * s.R + r) * s.S + t);
            }
}

// dW (K, C, R, S) of the convolution, in double.
std::vector<double> weight_gradient(const ConvShape& s, const std::vector<float>& x, const std::vector<float>& dy) {
  std::vector<double> dw(size_t(s.K) * s.C * s.R * s.S, 0.0);
  for_each_product(s, [&](size_t yi, size_t xi, size_t wi) { dw[wi] += double(dy[yi]) * x[xi]; });
  return dw;
}

// y (N, P, Q, K) of the convolution, in double.
std::vector<double> forward(const ConvShape& s, const std::vector<float>& x, const std::vector<float>& w) {
  std::vector<double> y(size_t(s.N) * s.P() * s.Q() * s.K, 0.0);
  for_each_product(s, [&](size_t yi, size_t xi, size_t wi) { y[yi] += double(w[wi]) * x[xi]; });
  return y;
}

// dx (N, H, W, C) of the convolution, in double.
std::vector<double> data_gradient(const ConvShape& s, const std::vector<float>& dy, const std::vector<float>& w) {
  std::vector<double> dx(size_t(s.N) * s.H * s.W * s.C, 0.0);
  for_each_product(s, [&](size_t yi, size_t xi, size_t wi) { dx[xi] += double(dy[yi]) * w[wi]; });
  return dx;
}

void check_shapes(byol::Backend* be, const std::string& tag) {
  struct Case {
    int N, H, C, K, R, stride;
  };
  const Case cases[] = {{8, 8, 4, 8, 1, 2},  {8, 16, 2, 4, 1, 2}, {1, 8, 1, 12, 1, 2}, {3, 8, 3, 16, 1, 2},
                        {2, 9, 5, 16, 1, 3}, {8, 8, 7, 64, 1, 2}, {8, 8, 8, 16, 1, 2}, {8, 8, 16, 32, 1, 2},
                        {8, 8, 4, 8, 1, 1},  {3, 9, 4, 8, 3, 2}};
  uint32_t seed = 7;
  for (const Case& c : cases) {
    ConvShape s;
    s.N = c.N, s.H = c.H, s.W = c.H, s.C = c.C, s.K = c.K, s.R = s.S = c.R, s.stride = c.stride, s.pad = c.R / 2;
    std::mt19937 rng(seed++);
    std::normal_distribution<float> normal;
    std::vector<float> x(size_t(s.N) * s.H * s.W * s.C), dy(size_t(s.N) * s.P() * s.Q() * s.K);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    const std::vector<double> want = weight_gradient(s, x, dy);
    const size_t n = want.size();
    std::vector<float> want_f(want.begin(), want.end()), twice(n);
    for (size_t i = 0; i < n; ++i) twice[i] = static_cast<float>(2.0 * want[i]);
    byol::Tensor tx = byol::Tensor::from_host(be, x.data(), {int64_t(x.size())}, byol::DType::f32);
    byol::Tensor tdy = byol::Tensor::from_host(be, dy.data(), {int64_t(dy.size())}, byol::DType::f32);
    byol::Tensor dw(be, {int64_t(n)}, byol::DType::f32);
    const std::string name = tag + " N" + std::to_string(s.N) + " H" + std::to_string(s.H) + " C" + std::to_string(s.C) +
                             " K" + std::to_string(s.K) + " " + std::to_string(s.R) + "x" + std::to_string(s.R) + " s" +
                             std::to_string(s.stride);
    // Sums of N*P*Q products of unit normals: float rounding stays far below 1e-4 of them.
    for (int call = 0; call < 3; ++call) {
      be->fill(dw.f32(), NAN, n);
      be->conv2d_backward_weight(dw.f32(), tdy.f32(), tx.f32(), s, false);
      byol_test::check(name + " call " + std::to_string(call), dw.to_vector_f32(), want_f, 1e-4f, 1e-5f);
      be->conv2d_backward_weight(dw.f32(), tdy.f32(), tx.f32(), s, true);
      byol_test::check(name + " call " + std::to_string(call) + " accumulated", dw.to_vector_f32(), twice, 2e-4f, 1e-5f);
    }
  }
}

BYOL_TEST("cpu/conv_weight_gradient_strided_1x1_few_channels", ctx) {
  check_shapes(ctx.cpu, "2 threads");
  std::unique_ptr<byol::Backend> one = byol::make_cpu_backend(1);
  check_shapes(one.get(), "1 thread");
}

// ---- im2col + SGEMM (conv_gemm.cc) against float64 loops ----

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// All three passes through the GEMM path on shapes that reach each of its branches: 3x3 and
// 7x7 unfolding with padding, strides whose last window stops short of the input (rows the
// kernel never reads, which backward-data must zero), 1x1 strided (unfolded) and 1x1 stride 1
// (no unfolding; the weight gradient accumulates in place), non-square images, and a batch
// whose unfolded rows exceed one chunk (8 MiB), so the weight gradient sums over chunks.
void check_gemm_shapes(byol::cpu::CpuBackend* be, const std::string& tag) {
  struct Case {
    int N, H, W, C, K, R, stride, pad;
  };
  const Case cases[] = {{2, 8, 8, 4, 8, 3, 1, 1},   {3, 9, 7, 5, 6, 3, 2, 1},   {2, 10, 10, 3, 8, 7, 2, 3},
                        {2, 8, 8, 6, 4, 3, 2, 0},   {2, 7, 7, 8, 16, 1, 2, 0},  {3, 5, 6, 16, 8, 1, 1, 0},
                        {2, 6, 6, 2, 3, 2, 2, 1},   {1, 4, 4, 32, 32, 3, 1, 1}, {5, 40, 40, 32, 4, 3, 1, 1}};
  uint32_t seed = 11;
  for (const Case& c : cases) {
    ConvShape s;
    s.N = c.N, s.H = c.H, s.W = c.W, s.C = c.C, s.K = c.K, s.R = s.S = c.R, s.stride = c.stride, s.pad = c.pad;
    std::mt19937 rng(seed++);
    std::normal_distribution<float> normal;
    std::vector<float> x(size_t(s.N) * s.H * s.W * s.C), dy(size_t(s.N) * s.P() * s.Q() * s.K),
        w(size_t(s.K) * s.C * s.R * s.S);
    for (float& v : x) v = normal(rng);
    for (float& v : dy) v = normal(rng);
    for (float& v : w) v = normal(rng);
    const std::string name = tag + " N" + std::to_string(s.N) + " " + std::to_string(s.H) + "x" + std::to_string(s.W) +
                             " C" + std::to_string(s.C) + " K" + std::to_string(s.K) + " " + std::to_string(s.R) + "x" +
                             std::to_string(s.R) + " s" + std::to_string(s.stride) + " pad " + std::to_string(s.pad);
    expect_true(be->conv_implementation(byol::cpu::PlanOp::conv_forward, s).rfind("gemm:", 0) == 0,
                name + " runs as a GEMM", be->conv_implementation(byol::cpu::PlanOp::conv_forward, s));
    byol::Tensor tx = byol::Tensor::from_host(be, x.data(), {int64_t(x.size())}, byol::DType::f32);
    byol::Tensor tdy = byol::Tensor::from_host(be, dy.data(), {int64_t(dy.size())}, byol::DType::f32);
    byol::Tensor tw = byol::Tensor::from_host(be, w.data(), {int64_t(w.size())}, byol::DType::f32);
    byol::Tensor y(be, {int64_t(dy.size())}, byol::DType::f32), dx(be, {int64_t(x.size())}, byol::DType::f32),
        dw(be, {int64_t(w.size())}, byol::DType::f32);
    be->fill(y.f32(), NAN, dy.size());
    be->fill(dx.f32(), NAN, x.size());
    be->fill(dw.f32(), NAN, w.size());
    // Sums of up to C*R*S (forward, backward-data) or N*P*Q (weights) products of unit normals.
    be->conv2d_forward(y.f32(), tx.f32(), tw.f32(), s);
    byol_test::check(name + " forward", y.to_vector_f32(), to_float(forward(s, x, w)), 1e-4f, 1e-5f);
    be->conv2d_backward_data(dx.f32(), tdy.f32(), tw.f32(), s);
    byol_test::check(name + " backward-data", dx.to_vector_f32(), to_float(data_gradient(s, dy, w)), 1e-4f, 1e-5f);
    const std::vector<double> want = weight_gradient(s, x, dy);
    be->conv2d_backward_weight(dw.f32(), tdy.f32(), tx.f32(), s, false);
    byol_test::check(name + " backward-weight", dw.to_vector_f32(), to_float(want), 1e-3f, 1e-5f);
    // Deterministic: the same call gives the same bits (resumed runs depend on it).
    const std::vector<float> first_y = y.to_vector_f32(), first_dx = dx.to_vector_f32(), first_dw = dw.to_vector_f32();
    be->conv2d_forward(y.f32(), tx.f32(), tw.f32(), s);
    be->conv2d_backward_data(dx.f32(), tdy.f32(), tw.f32(), s);
    be->conv2d_backward_weight(dw.f32(), tdy.f32(), tx.f32(), s, false);
    expect_true(y.to_vector_f32() == first_y && dx.to_vector_f32() == first_dx && dw.to_vector_f32() == first_dw,
                name + " gives the same bits on a second call");
    std::vector<double> twice(want);
    for (double& v : twice) v *= 2.0;
    be->conv2d_backward_weight(dw.f32(), tdy.f32(), tx.f32(), s, true);
    byol_test::check(name + " backward-weight accumulated", dw.to_vector_f32(), to_float(twice), 2e-3f, 1e-5f);
    expect_true(tx.to_vector_f32() == x && tw.to_vector_f32() == w && tdy.to_vector_f32() == dy,
                name + " leaves its inputs unchanged");
  }
}

BYOL_TEST("cpu/conv_gemm_against_float64", ctx) {
  for (int threads : {2, 1}) {
    byol::cpu::CpuBackend be(threads);
    be.set_conv_algorithm(byol::cpu::ConvAlgorithm::gemm);
    check_gemm_shapes(&be, std::to_string(threads) + (threads == 1 ? " thread" : " threads"));
  }
}

// Which convolutions take the GEMM path: every float32 one when forced, none when oneDNN is
// forced or the convolution is bf16 (backward-weight stays float32 in a bf16 plan); the
// setting's parser names what it read; BYOL_CPU_CONV sets a new backend's algorithm.
BYOL_TEST("cpu/conv_algorithm_setting", ctx) {
  using byol::cpu::ConvAlgorithm;
  using byol::cpu::PlanOp;
  byol::cpu::CpuBackend be(1);
  ConvShape s;
  s.N = 4, s.H = s.W = 8, s.C = s.K = 64, s.R = s.S = 3, s.stride = 1, s.pad = 1;
  const PlanOp ops[] = {PlanOp::conv_forward, PlanOp::conv_backward_data, PlanOp::conv_backward_weight};
  be.set_conv_algorithm(ConvAlgorithm::gemm);
  for (PlanOp op : ops) expect_true(be.conv_uses_gemm(op, s), "gemm: pass " + std::to_string(int(op)) + " is a GEMM");
  expect_true(be.describe().find("gemm convolutions") != std::string::npos, "describe() names a forced algorithm",
              be.describe());
  be.set_conv_algorithm(ConvAlgorithm::onednn);
  for (PlanOp op : ops) expect_true(!be.conv_uses_gemm(op, s), "onednn: pass " + std::to_string(int(op)) + " is oneDNN's");
  if (byol::cpu::cpu_capabilities().bf16_supported) {
    be.set_conv_algorithm(ConvAlgorithm::gemm);
    be.set_conv_bf16(true);
    expect_true(!be.conv_uses_gemm(PlanOp::conv_forward, s) && !be.conv_uses_gemm(PlanOp::conv_backward_data, s) &&
                    be.conv_uses_gemm(PlanOp::conv_backward_weight, s),
                "bf16 forward and backward-data stay on oneDNN; backward-weight (float32) follows the setting");
  }
  // Narrow convolutions stay on oneDNN under the automatic rule on every machine.
  be.set_conv_bf16(false);
  be.set_conv_algorithm(ConvAlgorithm::automatic);
  ConvShape narrow = s;
  narrow.C = 16;
  for (PlanOp op : ops) expect_true(!be.conv_uses_gemm(op, narrow), "auto: 16 input channels stay on oneDNN");
  expect_error("an unknown algorithm", [] { byol::cpu::parse_conv_algorithm("fast", "BYOL_CPU_CONV"); },
               {"BYOL_CPU_CONV", "'auto', 'onednn' or 'gemm'", "'fast'"});
  const char* before = std::getenv("BYOL_CPU_CONV");
  const std::string saved = before ? before : "";
  setenv("BYOL_CPU_CONV", "gemm", 1);
  byol::cpu::CpuBackend from_env(1);
  setenv("BYOL_CPU_CONV", "slow", 1);
  expect_error("BYOL_CPU_CONV=slow", [] { byol::cpu::CpuBackend bad(1); }, {"BYOL_CPU_CONV", "'slow'"});
  if (before) setenv("BYOL_CPU_CONV", saved.c_str(), 1);
  else unsetenv("BYOL_CPU_CONV");
  expect_true(from_env.conv_algorithm() == ConvAlgorithm::gemm, "BYOL_CPU_CONV=gemm starts the backend on gemm");
}

}  // namespace
