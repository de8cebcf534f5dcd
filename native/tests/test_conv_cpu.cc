// test_conv_cpu.cc: the CPU backend's convolution weight gradient against float64 loops on the
// shapes where oneDNN 2.6 goes wrong: strided 1x1 convolutions with fewer than 8 input channels
// (the downsample shortcut of a narrow ResNet). oneDNN's jit_1x1 kernel wrote outside its
// buffers there: the first call was right, later ones off by O(1) and different each time,
// and with one thread the heap was corrupted. Each shape is run several times, with and without
// accumulate, on a 1-thread and a 2-thread backend; neighbouring shapes that oneDNN handles
// (C >= 8, 3x3) are the control.
#include <cmath>
#include <random>
#include <vector>

#include "byol/backend.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::ConvShape;

// dW (K, C, R, S) of the convolution, in double.
std::vector<double> weight_gradient(const ConvShape& s, const std::vector<float>& x, const std::vector<float>& dy) {
  const int P = s.P(), Q = s.Q();
  std::vector<double> dw(size_t(s.K) * s.C * s.R * s.S, 0.0);
  for (int n = 0; n < s.N; ++n)
    for (int p = 0; p < P; ++p)
      for (int q = 0; q < Q; ++q)
        for (int k = 0; k < s.K; ++k) {
          const double g = dy[((size_t(n) * P + p) * Q + q) * s.K + k];
          for (int r = 0; r < s.R; ++r)
            for (int t = 0; t < s.S; ++t) {
              const int h = p * s.stride - s.pad + r, w = q * s.stride - s.pad + t;
              if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
              for (int c = 0; c < s.C; ++c)
                dw[((size_t(k) * s.C + c) * s.R + r) * s.S + t] += g * x[((size_t(n) * s.H + h) * s.W + w) * s.C + c];
            }
        }
  return dw;
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

}  // namespace
