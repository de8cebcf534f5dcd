// test_batchnorm_rows.cc: the row loops of the CUDA batch norm kernels (cuda/kernels/
// batchnorm_rows.h), run on the host. Each loads kUnroll rows ahead of using them; here each
// must equal the plain one-row-at-a-time loop bit for bit, over ranges of every length around
// the unroll factor, strides, channels, masks, residuals and in-place outputs, so that an
// indexing slip in the unrolled part or its remainder shows without a GPU. The shifted moments
// are also checked against float64 statistics, including a channel whose mean is large next to
// its spread, and so is the finalize kernels' lane-parallel merge of chunk partials.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../cuda/kernels/batchnorm_rows.h"
#include "harness.h"
#include "runner.h"

namespace {

namespace rows = byol::batchnorm_rows;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

struct Case {
  int64_t C;
  int c;
  int64_t begin, end, stride;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int64_t C : {1, 3, 32})
    for (int64_t stride : {1, 3, 8})
      for (int64_t begin : {0, 2})
        for (int64_t len = 0; len <= 4 * rows::kUnroll + 3; ++len)
          out.push_back({C, static_cast<int>(C - 1), begin, begin + len * stride - (len > 0 ? stride - 1 : 0), stride});
  out.push_back({5, 2, 7, 3, 2});  // empty: begin past end
  return out;
}

BYOL_TEST("batchnorm_rows/unrolled_equals_plain_loop", ctx) {
  std::mt19937 gen(17);
  std::normal_distribution<float> normal(0.5f, 2.0f);
  const int64_t M = 200;
  int mismatches = 0, checked = 0;
  std::string first;
  auto note = [&](bool ok, const std::string& what, const Case& k) {
    ++checked;
    if (ok) return;
    if (mismatches++ == 0)
      first = what + " C=" + std::to_string(k.C) + " begin=" + std::to_string(k.begin) + " end=" +
              std::to_string(k.end) + " stride=" + std::to_string(k.stride);
  };
  for (const Case& k : cases()) {
    std::vector<float> x(size_t(M * k.C)), dout(x.size()), relu_out(x.size()), residual(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = normal(gen);
      dout[i] = normal(gen);
      relu_out[i] = normal(gen) > 0.5f ? normal(gen) : 0.0f;
      residual[i] = normal(gen);
    }
    // Moments.
    rows::ShiftedMoments got;
    rows::moments_column(got, x.data(), k.C, k.c, k.begin, k.end, k.stride);
    rows::ShiftedMoments want;
    if (k.begin < k.end) want.shift = x[k.begin * k.C + k.c];
    for (int64_t r = k.begin; r < k.end; r += k.stride) want.add(x[r * k.C + k.c]);
    note(same_bits(got.count, want.count) && same_bits(got.s1, want.s1) && same_bits(got.s2, want.s2) &&
             same_bits(got.shift, want.shift),
         "moments_column", k);
    // Gradient sums, with and without the ReLU mask.
    for (const float* mask : {static_cast<const float*>(nullptr), static_cast<const float*>(relu_out.data())}) {
      float a = 0.25f, b = -0.5f;  // the functions add to what is there
      rows::grad_sums_column(&a, &b, dout.data(), x.data(), mask, k.C, k.c, k.begin, k.end, k.stride, 0.3f, 1.7f);
      float wa = 0.25f, wb = -0.5f;
      for (int64_t r = k.begin; r < k.end; r += k.stride) {
        const int64_t i = r * k.C + k.c;
        const float dy = mask == nullptr || mask[i] > 0.0f ? dout[i] : 0.0f;
        wa += dy;
        wb = fmaf(dy, (x[i] - 0.3f) * 1.7f, wb);
      }
      note(same_bits(a, wa) && same_bits(b, wb), mask ? "grad_sums_column (masked)" : "grad_sums_column", k);
    }
    // Normalize + epilogue, into a separate output and in place.
    for (int variant = 0; variant < 4; ++variant) {
      const float* res = variant & 1 ? residual.data() : nullptr;
      const bool relu = variant & 2;
      std::vector<float> out(x.size(), -7.0f), inplace = x, want_out(x.size(), -7.0f);
      rows::apply_column(out.data(), x.data(), res, relu, k.C, k.c, k.begin, k.end, k.stride, 0.3f, 1.7f, -0.2f);
      rows::apply_column(inplace.data(), inplace.data(), res, relu, k.C, k.c, k.begin, k.end, k.stride, 0.3f, 1.7f,
                         -0.2f);
      std::vector<float> want_inplace = x;
      for (int64_t r = k.begin; r < k.end; r += k.stride) {
        const int64_t i = r * k.C + k.c;
        float v = fmaf(x[i] - 0.3f, 1.7f, -0.2f);
        if (res) v = v + res[i];
        if (relu) v = (v > 0.0f || v != v) ? v : 0.0f;
        want_out[i] = v;
        want_inplace[i] = v;
      }
      bool ok = true;
      for (size_t i = 0; i < x.size(); ++i)
        ok = ok && same_bits(out[i], want_out[i]) && same_bits(inplace[i], want_inplace[i]);
      note(ok, "apply_column variant " + std::to_string(variant), k);
    }
    // Input gradient, into a separate buffer and in place over dout, masked and not.
    for (const float* mask : {static_cast<const float*>(nullptr), static_cast<const float*>(relu_out.data())}) {
      std::vector<float> dx(x.size(), -7.0f), inplace = dout, want_dx(x.size(), -7.0f), want_inplace = dout;
      rows::grad_input_column(dx.data(), dout.data(), x.data(), mask, k.C, k.c, k.begin, k.end, k.stride, 0.3f,
                              1.7f, 0.9f, 0.05f, -0.02f);
      rows::grad_input_column(inplace.data(), inplace.data(), x.data(), mask, k.C, k.c, k.begin, k.end, k.stride,
                              0.3f, 1.7f, 0.9f, 0.05f, -0.02f);
      for (int64_t r = k.begin; r < k.end; r += k.stride) {
        const int64_t i = r * k.C + k.c;
        const float xhat = (x[i] - 0.3f) * 1.7f;
        const float dy = mask == nullptr || mask[i] > 0.0f ? dout[i] : 0.0f;
        want_dx[i] = 0.9f * (dy - 0.05f - xhat * -0.02f);
        want_inplace[i] = want_dx[i];
      }
      bool ok = true;
      for (size_t i = 0; i < x.size(); ++i)
        ok = ok && same_bits(dx[i], want_dx[i]) && same_bits(inplace[i], want_inplace[i]);
      note(ok, mask ? "grad_input_column (masked)" : "grad_input_column", k);
    }
  }
  byol_test::expect_true(mismatches == 0, std::to_string(checked) + " unrolled loops equal the plain loop bit for bit",
                         std::to_string(mismatches) + " differ, first: " + first);
}

// The shifted moments against float64 statistics of the same float inputs: ordinary data, a
// channel whose mean is 1e4 times its spread, and a constant one (variance exactly 0).
BYOL_TEST("batchnorm_rows/shifted_moments_accuracy", ctx) {
  std::mt19937 gen(5);
  struct Channel {
    const char* name;
    float mean, spread;
  };
  for (const Channel& ch : {Channel{"ordinary", 0.3f, 1.5f}, Channel{"large mean", 1000.0f, 0.1f},
                            Channel{"constant", -2.5f, 0.0f}}) {
    std::normal_distribution<float> normal(ch.mean, ch.spread > 0 ? ch.spread : 1.0f);
    std::vector<float> x(1000);
    for (float& v : x) v = ch.spread > 0 ? normal(gen) : ch.mean;
    rows::ShiftedMoments m;
    rows::moments_column(m, x.data(), 1, 0, 0, static_cast<int64_t>(x.size()), 1);
    float n, mean, m2;
    m.finish(&n, &mean, &m2);
    double dmean = 0, dm2 = 0;
    for (float v : x) dmean += v;
    dmean /= double(x.size());
    for (float v : x) dm2 += (v - dmean) * (v - dmean);
    const double mean_err = std::fabs(mean - dmean) / std::max(1.0, std::fabs(dmean));
    const double m2_err = dm2 > 0 ? std::fabs(m2 - dm2) / dm2 : std::fabs(m2);
    byol_test::expect_true(n == 1000.0f, std::string(ch.name) + ": count");
    byol_test::expect_true(mean_err < 1e-6, std::string(ch.name) + ": mean within 1e-6 of float64",
                           "relative error " + byol_test::fmt(mean_err));
    byol_test::expect_true(m2_err < 1e-4, std::string(ch.name) + ": sum of squared deviations within 1e-4",
                           "relative error " + byol_test::fmt(m2_err));
  }
}

// The finalize kernels' merge of chunk partials: each lane's unrolled sum equals its plain loop
// bit for bit, and the lanes added in order give the mean and sum of squared deviations of all
// rows (against float64 statistics of the raw values) for chunk counts below, at and far above
// the lane count, with a short last chunk.
BYOL_TEST("batchnorm_rows/chunk_merge", ctx) {
  std::mt19937 gen(23);
  std::normal_distribution<float> normal(5.0f, 2.0f);
  const int64_t C = 3;
  const int c = 1;
  bool bitwise = true;
  for (const auto& [M, rows_per_chunk] : std::vector<std::pair<int64_t, int64_t>>{{50, 20}, {64, 8}, {1000, 37},
                                                                                  {26400, 100}, {1, 1}}) {
    const int64_t chunks = (M + rows_per_chunk - 1) / rows_per_chunk;
    std::vector<float> x(static_cast<size_t>(M));
    for (float& v : x) v = normal(gen);
    // Partials as the statistics kernel leaves them (float), and a second pair for chunk_sums.
    std::vector<float> pmean(size_t(chunks * C), 9.0f), pm2(pmean.size(), 9.0f), pa(pmean.size()), pb(pmean.size());
    for (int64_t g = 0; g < chunks; ++g) {
      const int64_t n = rows::chunk_rows(M, rows_per_chunk, g);
      double m = 0, q = 0;
      for (int64_t i = 0; i < n; ++i) m += x[g * rows_per_chunk + i];
      m /= double(n);
      for (int64_t i = 0; i < n; ++i) q += (x[g * rows_per_chunk + i] - m) * (x[g * rows_per_chunk + i] - m);
      pmean[g * C + c] = float(m);
      pm2[g * C + c] = float(q);
      pa[g * C + c] = normal(gen);
      pb[g * C + c] = normal(gen);
    }
    double total = 0;
    for (int lane = 0; lane < rows::kMergeLanes; ++lane) {
      const double got = rows::chunk_weighted_means(pmean.data(), C, c, chunks, rows_per_chunk, M, lane);
      double want = 0;
      for (int64_t g = lane; g < chunks; g += rows::kMergeLanes)
        want += double(rows::chunk_rows(M, rows_per_chunk, g)) * double(pmean[g * C + c]);
      bitwise = bitwise && got == want;
      total += got;
    }
    const double mean = total / double(M);
    double m2 = 0, sum_a = 0, sum_b = 0;
    for (int lane = 0; lane < rows::kMergeLanes; ++lane) {
      const double got = rows::chunk_deviations(pmean.data(), pm2.data(), C, c, chunks, rows_per_chunk, M, lane, mean);
      double want = 0;
      for (int64_t g = lane; g < chunks; g += rows::kMergeLanes) {
        const double d = double(pmean[g * C + c]) - mean;
        want += double(pm2[g * C + c]) + double(rows::chunk_rows(M, rows_per_chunk, g)) * d * d;
      }
      bitwise = bitwise && got == want;
      m2 += got;
      double a = 0, b = 0, wa = 0, wb = 0;
      rows::chunk_sums(&a, &b, pa.data(), pb.data(), C, c, chunks, lane);
      for (int64_t g = lane; g < chunks; g += rows::kMergeLanes) {
        wa += double(pa[g * C + c]);
        wb += double(pb[g * C + c]);
      }
      bitwise = bitwise && a == wa && b == wb;
      sum_a += a;
      sum_b += b;
    }
    double ref_mean = 0, ref_m2 = 0, ref_a = 0, ref_b = 0;
    for (float v : x) ref_mean += v;
    ref_mean /= double(M);
    for (float v : x) ref_m2 += (v - ref_mean) * (v - ref_mean);
    for (int64_t g = 0; g < chunks; ++g) {
      ref_a += pa[g * C + c];
      ref_b += pb[g * C + c];
    }
    const std::string what = "M=" + std::to_string(M) + " in " + std::to_string(chunks) + " chunks";
    const double m2_err = ref_m2 > 0 ? std::fabs(m2 - ref_m2) / ref_m2 : std::fabs(m2);
    byol_test::expect_true(std::fabs(mean - ref_mean) <= 1e-6 * std::fabs(ref_mean), what + ": mean",
                           "got " + byol_test::fmt(mean) + ", float64 " + byol_test::fmt(ref_mean));
    byol_test::expect_true(m2_err <= 1e-6, what + ": sum of squared deviations within 1e-6",
                           "relative error " + byol_test::fmt(m2_err));
    byol_test::expect_true(std::fabs(sum_a - ref_a) <= 1e-12 * (1 + std::fabs(ref_a)) &&
                               std::fabs(sum_b - ref_b) <= 1e-12 * (1 + std::fabs(ref_b)),
                           what + ": chunk sums");
  }
  byol_test::expect_true(bitwise, "every lane's unrolled merge equals its plain loop bit for bit");
}

}  // namespace
