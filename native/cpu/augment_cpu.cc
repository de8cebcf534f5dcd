// augment_cpu.cc: CPU kernel for BYOL's augmentations over a uint8 NHWC batch.
// Contract: byol/augment.h's pipeline, bit-for-bit independent of thread count (one sample per
// thread, fixed summation order). Resampling mirrors PyTorch's upsample_bilinear2d /
// upsample_bicubic2d (align_corners=False, antialias off) applied to the cropped box. The
// per-pixel arithmetic and the argument checks are core/augment_math.h, shared with the CUDA
// kernels; this file keeps the CPU's loop structure (separable, vectorized passes).
#include "augment_cpu.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <vector>

#include "../core/augment_math.h"

namespace byol {
namespace cpu {

namespace {

namespace am = augment_math;

// Taps for `out_len` outputs resampling the box [box0, box0 + box_len) of an axis of length
// `in_len`, indexed by output coordinate (`reverse`: the horizontal flip).
std::vector<am::Taps> axis_taps(float box0, float box_len, int in_len, int out_len, bool bicubic,
                                bool reverse) {
  const am::AxisBox box = am::axis_box(box0, box_len, in_len, out_len);
  std::vector<am::Taps> taps(out_len);
  for (int o = 0; o < out_len; ++o) taps[am::flipped_column(o, out_len, reverse)] = am::axis_taps(box, o, bicubic);
  return taps;
}

// Resized crop (+ flip folded into the column taps) into img (out_h, out_w, C), clamped to
// [0, 1]. Horizontal pass over the referenced source rows, then vertical, as PyTorch nests it.
void resized_crop(float* img, std::vector<float>& rows, const uint8_t* src, const AugmentParams& p,
                  int H, int W, int C, int out_h, int out_w, const float* to_unit) {
  const bool bicubic = p.interpolation == static_cast<int32_t>(Interpolation::bicubic);
  const int ntaps = bicubic ? 4 : 2;
  std::vector<am::Taps> cols = axis_taps(p.crop_x0, p.crop_w, W, out_w, bicubic, p.flip != 0);
  std::vector<am::Taps> rws = axis_taps(p.crop_y0, p.crop_h, H, out_h, bicubic, false);
  int row_lo = H, row_hi = -1;
  for (const am::Taps& t : rws)
    for (int k = 0; k < ntaps; ++k) {
      row_lo = std::min(row_lo, t.index[k]);
      row_hi = std::max(row_hi, t.index[k]);
    }
  const size_t row_stride = static_cast<size_t>(out_w) * C;
  rows.resize(static_cast<size_t>(row_hi - row_lo + 1) * row_stride);
  for (int y = row_lo; y <= row_hi; ++y) {
    const uint8_t* in_row = src + static_cast<size_t>(y) * W * C;
    float* out_row = rows.data() + static_cast<size_t>(y - row_lo) * row_stride;
    for (int x = 0; x < out_w; ++x) {
      const am::Taps& t = cols[x];
      for (int c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (int k = 0; k < ntaps; ++k) acc = am::tap_accumulate(acc, t.weight[k], to_unit[in_row[t.index[k] * C + c]]);
        out_row[x * C + c] = acc;
      }
    }
  }
  // Tap-major accumulation keeps every inner loop contiguous (vectorized) and adds the taps
  // in the same order for every element.
  for (int y = 0; y < out_h; ++y) {
    const am::Taps& t = rws[y];
    float* out_row = img + static_cast<size_t>(y) * row_stride;
    std::fill(out_row, out_row + row_stride, 0.0f);
    for (int k = 0; k < ntaps; ++k) {
      const float w = t.weight[k];
      const float* in_row = rows.data() + static_cast<size_t>(t.index[k] - row_lo) * row_stride;
      for (size_t e = 0; e < row_stride; ++e) out_row[e] = am::tap_accumulate(out_row[e], w, in_row[e]);
    }
    for (size_t e = 0; e < row_stride; ++e) out_row[e] = am::clamp01(out_row[e]);
  }
}

// The channel means contrast blends with: sequential double sums (deterministic whatever the
// thread count, since one thread owns a sample).
void channel_means(float* means, const float* img, size_t pixels, int C) {
  double sum[3] = {0, 0, 0};
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < C; ++c) sum[c] += img[i * C + c];
  for (int c = 0; c < C; ++c) means[c] = am::contrast_mean(sum[c], static_cast<int64_t>(pixels));
}

// Jitter op `op` over the whole image. Brightness and contrast loop over elements (vectorized);
// saturation and hue mix a pixel's channels.
void jitter_image(float* img, size_t pixels, int C, int op, const AugmentParams& p) {
  const size_t n = pixels * C;
  switch (op) {
    case kBrightness:
      for (size_t e = 0; e < n; ++e) img[e] = am::adjust_brightness(img[e], p.brightness);
      break;
    case kContrast: {
      float means[3];
      channel_means(means, img, pixels, C);
      for (size_t i = 0; i < pixels; ++i)
        for (int c = 0; c < C; ++c) img[i * C + c] = am::adjust_contrast(img[i * C + c], means[c], p.contrast);
      break;
    }
    case kSaturation:
      if (C == 3)
        for (size_t i = 0; i < pixels; ++i) am::adjust_saturation(img + i * 3, p.saturation);
      break;
    case kHue:
      if (C == 3)
        for (size_t i = 0; i < pixels; ++i) am::adjust_hue(img + i * 3, p.hue);
      break;
  }
}

// Separable Gaussian blur, horizontal pass into tmp, vertical pass back into img. Both passes
// accumulate tap by tap over contiguous rows (vectorized); only the reflected border columns
// of the horizontal pass gather one value at a time. Per element, taps are summed in the same
// order everywhere (am::blur_tap_sum's).
void gaussian_blur(float* img, std::vector<float>& tmp, int Hh, int Ww, int C, float sigma,
                   int size_h, int size_w) {
  std::vector<float> wx(size_w), wy(size_h);
  am::gaussian_taps(wx.data(), size_w, sigma);
  am::gaussian_taps(wy.data(), size_h, sigma);
  const int rx = size_w / 2, ry = size_h / 2;
  const size_t row_stride = static_cast<size_t>(Ww) * C;
  tmp.resize(static_cast<size_t>(Hh) * row_stride);
  // Columns [x_lo, x_hi) read no padding.
  const int x_lo = std::min(rx, Ww), x_hi = std::max(x_lo, Ww - rx);
  for (int y = 0; y < Hh; ++y) {
    const float* in_row = img + y * row_stride;
    float* out_row = tmp.data() + y * row_stride;
    const size_t e_lo = static_cast<size_t>(x_lo) * C, e_hi = static_cast<size_t>(x_hi) * C;
    std::fill(out_row + e_lo, out_row + e_hi, 0.0f);
    for (int k = 0; k < size_w; ++k) {
      const float w = wx[k];
      const float* src = in_row + static_cast<size_t>(x_lo + k - rx) * C;  // >= in_row
      float* dst = out_row + e_lo;
      for (size_t j = 0; j < e_hi - e_lo; ++j) dst[j] = am::tap_accumulate(dst[j], w, src[j]);
    }
    auto border = [&](int x) {
      for (int c = 0; c < C; ++c) out_row[x * C + c] = am::blur_tap_sum(in_row + c, C, x, Ww, wx.data(), size_w);
    };
    for (int x = 0; x < x_lo; ++x) border(x);
    for (int x = x_hi; x < Ww; ++x) border(x);
  }
  for (int y = 0; y < Hh; ++y) {
    float* out_row = img + y * row_stride;
    std::fill(out_row, out_row + row_stride, 0.0f);
    for (int k = 0; k < size_h; ++k) {
      const float w = wy[k];
      const float* src = tmp.data() + am::reflect(y + k - ry, Hh) * row_stride;
      for (size_t e = 0; e < row_stride; ++e) out_row[e] = am::tap_accumulate(out_row[e], w, src[e]);
    }
  }
}

// One sample through the whole pipeline into img (out_h, out_w, C).
void augment_one(float* img, std::vector<float>& scratch, const uint8_t* src, const AugmentParams& p,
                 int H, int W, int C, int out_h, int out_w, const float* to_unit) {
  const size_t pixels = static_cast<size_t>(out_h) * out_w;
  resized_crop(img, scratch, src, p, H, W, C, out_h, out_w, to_unit);
  if (p.jitter)
    for (int k = 0; k < 4; ++k) jitter_image(img, pixels, C, p.jitter_order[k], p);
  if (p.grayscale && C == 3)
    for (size_t i = 0; i < pixels; ++i) am::to_grayscale(img + i * 3);
  if (p.blur) gaussian_blur(img, scratch, out_h, out_w, C, p.blur_sigma, p.blur_size_h, p.blur_size_w);
  const bool solarize = p.solarize != 0;
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < C; ++c) img[i * C + c] = am::finish(img[i * C + c], solarize, p.mean[c], p.std[c]);
}

}  // namespace

void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W,
             int C, int out_h, int out_w) {
  // The checks and messages the CUDA backend shares (prefixed "cuda: " there).
  if (!am::check_augment_args("", out, images, params, N, H, W, C, out_h, out_w)) return;

  float to_unit[256];
  for (int v = 0; v < 256; ++v) to_unit[v] = am::unit_value(v);
  const size_t in_size = static_cast<size_t>(H) * W * C;
  const size_t pixels = static_cast<size_t>(out_h) * out_w;
  const size_t out_size = pixels * C;

  // Never more threads than samples: idle team members only add barrier latency, which is
  // large when the cores are shared.
  const int threads = std::max(1, std::min(N, omp_get_max_threads()));
  // Allocation failures inside the team are carried out of it and rethrown: an exception
  // that escapes an OpenMP region terminates the process.
  std::exception_ptr failure;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> scratch;  // per-thread: resize rows, then blur rows
#pragma omp for schedule(dynamic, 1)
    for (int n = 0; n < N; ++n) {
      try {
        augment_one(out + n * out_size, scratch, images + n * in_size, params[n], H, W, C, out_h,
                    out_w, to_unit);
      } catch (...) {
#pragma omp critical(byol_augment_failure)
        if (!failure) failure = std::current_exception();
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace cpu
}  // namespace byol
