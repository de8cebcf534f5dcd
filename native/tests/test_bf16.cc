// test_bf16.cc: the CPU backend's bf16 convolutions (make_cpu_backend(threads, true)).
// Contract checked: forward and backward-data equal a float64 convolution of the inputs
// rounded to bfloat16 (round to nearest even) up to float32 accumulation error, so they
// really read bf16 and really accumulate in float32; backward-weight is the float32 one, bit
// for bit. Products of two bf16 values are exact in float32, so the only error left is the
// order of the float32 sums: bounded here by 2e-6 of the largest sum of |products|.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../cpu/cpu_backend.h"
#include "byol/backend.h"
#include "harness.h"

namespace {

float round_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // nearest, ties to even (finite inputs only)
  bits &= 0xFFFF0000u;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

std::vector<float> rounded(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_bf16(v[i]);
  return out;
}

struct Reference {
  std::vector<float> value;  // float64 result, stored as float
  double scale = 0;          // the largest sum of |products| of one element
};

// Visits every (input element, weight element, output element) triple of the convolution:
// inp NHWC, weight KCRS (OIHW), out NPQK.
template <typename F>
void for_each_tap(const byol::ConvShape& s, F&& f) {
  for (int n = 0; n < s.N; ++n)
    for (int p = 0; p < s.P(); ++p)
      for (int q = 0; q < s.Q(); ++q)
        for (int k = 0; k < s.K; ++k)
          for (int r = 0; r < s.R; ++r)
            for (int t = 0; t < s.S; ++t) {
              const int h = p * s.stride - s.pad + r, w = q * s.stride - s.pad + t;
              if (h < 0 || h >= s.H || w < 0 || w >= s.W) continue;
              for (int c = 0; c < s.C; ++c) {
                const size_t i = ((static_cast<size_t>(n) * s.H + h) * s.W + w) * s.C + c;
                const size_t j = ((static_cast<size_t>(k) * s.C + c) * s.R + r) * s.S + t;
                const size_t o = ((static_cast<size_t>(n) * s.P() + p) * s.Q() + q) * s.K + k;
                f(i, j, o);
              }
            }
}

Reference reference(size_t n, const std::vector<float>& a, const std::vector<float>& b,
                    const byol::ConvShape& s, bool backward_data) {
  std::vector<double> sum(n, 0.0), abs_sum(n, 0.0);
  for_each_tap(s, [&](size_t i, size_t j, size_t o) {
    // forward: a = inp (i), b = weight (j) -> out (o); backward-data: a = dout (o) -> dinp (i).
    const size_t dst = backward_data ? i : o;
    const double product = static_cast<double>(a[backward_data ? o : i]) * b[j];
    sum[dst] += product;
    abs_sum[dst] += std::fabs(product);
  });
  Reference ref;
  ref.value.assign(sum.begin(), sum.end());
  for (double v : abs_sum) ref.scale = std::max(ref.scale, v);
  return ref;
}

std::vector<float> random_vector(size_t n, std::mt19937& gen) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

void check_shape(const byol::ConvShape& s, const std::string& what) {
  std::mt19937 gen(1234);
  const size_t in_n = static_cast<size_t>(s.N) * s.H * s.W * s.C;
  const size_t w_n = static_cast<size_t>(s.K) * s.C * s.R * s.S;
  const size_t out_n = static_cast<size_t>(s.N) * s.P() * s.Q() * s.K;
  const std::vector<float> inp = random_vector(in_n, gen), weight = random_vector(w_n, gen),
                           dout = random_vector(out_n, gen);
  std::unique_ptr<byol::Backend> bf16 = byol::make_cpu_backend(2, true);
  std::unique_ptr<byol::Backend> fp32 = byol::make_cpu_backend(2, false);

  // Forward: the bf16 reference within float32 summation error; the exact (float32-input)
  // reference missed by more than that somewhere, which shows the inputs were rounded.
  std::vector<float> out(out_n, NAN);
  bf16->conv2d_forward(out.data(), inp.data(), weight.data(), s);
  Reference want = reference(out_n, rounded(inp), rounded(weight), s, false);
  byol_test::check(what + ": forward vs float64 on bf16-rounded inputs", out, want.value,
                   static_cast<float>(2e-6 * want.scale), 0.0f);
  Reference exact = reference(out_n, inp, weight, s, false);
  BYOL_CHECK(max_abs_diff(out, exact.value) > 1e-5 * exact.scale, what,
             ": bf16 forward equals the float32 convolution; were the inputs rounded to bf16?");

  std::vector<float> dinp(in_n, NAN);
  bf16->conv2d_backward_data(dinp.data(), dout.data(), weight.data(), s);
  want = reference(in_n, rounded(dout), rounded(weight), s, true);
  byol_test::check(what + ": backward-data vs float64 on bf16-rounded inputs", dinp, want.value,
                   static_cast<float>(2e-6 * want.scale), 0.0f);
  exact = reference(in_n, dout, weight, s, true);
  BYOL_CHECK(max_abs_diff(dinp, exact.value) > 1e-5 * exact.scale, what,
             ": bf16 backward-data equals the float32 convolution; were the inputs rounded?");

  // Backward-weight stays float32: the same primitive as the float32 backend's, bit for bit.
  std::vector<float> dw_bf16(w_n, NAN), dw_fp32(w_n, NAN);
  bf16->conv2d_backward_weight(dw_bf16.data(), dout.data(), inp.data(), s, false);
  fp32->conv2d_backward_weight(dw_fp32.data(), dout.data(), inp.data(), s, false);
  byol_test::check(what + ": backward-weight equals the float32 backend's", dw_bf16, dw_fp32, 0.0f, 0.0f);
}

byol::ConvShape shape(int N, int H, int C, int K, int R, int stride, int pad) {
  byol::ConvShape s;
  s.N = N, s.H = H, s.W = H, s.C = C, s.K = K, s.R = R, s.S = R, s.stride = stride, s.pad = pad;
  return s;
}

}  // namespace

BYOL_TEST("cpu_bf16/conv_3x3", ctx) { check_shape(shape(4, 9, 16, 32, 3, 1, 1), "3x3 stride 1, C 16 -> K 32"); }
BYOL_TEST("cpu_bf16/conv_stem_stride2", ctx) { check_shape(shape(3, 11, 3, 16, 3, 2, 1), "3x3 stride 2, C 3 -> K 16"); }
BYOL_TEST("cpu_bf16/conv_1x1_downsample", ctx) { check_shape(shape(2, 8, 32, 64, 1, 2, 0), "1x1 stride 2, C 32 -> K 64"); }

// Switching precision on a live backend takes effect for the next op (the plan cache keys
// on it), and switching back gives the float32 results again, bit for bit.
BYOL_TEST("cpu_bf16/switch_on_a_live_backend", ctx) {
  const byol::ConvShape s = shape(2, 6, 8, 8, 3, 1, 1);
  std::mt19937 gen(7);
  const size_t n = static_cast<size_t>(2) * 6 * 6 * 8;
  const std::vector<float> inp = random_vector(n, gen), weight = random_vector(8 * 8 * 9, gen);
  byol::cpu::CpuBackend b(2);
  std::vector<float> first(n), bf(n), again(n);
  b.conv2d_forward(first.data(), inp.data(), weight.data(), s);
  b.set_conv_bf16(true);
  b.conv2d_forward(bf.data(), inp.data(), weight.data(), s);
  BYOL_CHECK(b.describe().find("bf16 convolutions") != std::string::npos,
             "describe() of a bf16 backend does not say so: ", b.describe());
  b.set_conv_bf16(false);
  b.conv2d_forward(again.data(), inp.data(), weight.data(), s);
  byol_test::check("fp32 forward, before and after bf16 ones", again, first, 0.0f, 0.0f);
  BYOL_CHECK(max_abs_diff(bf, first) > 0, "the forward after set_conv_bf16(true) equals the fp32 one");
}
