// augment_math.h: the arithmetic of BYOL's augmentations (byol/augment.h's pipeline), shared by
// the CPU kernel (cpu/augment_cpu.cc) and the CUDA kernels (cuda/kernels/augment.cu), and the
// argument checks of Backend::augment. Contract: every float operation rounds once, in the
// written order (optim_math.h's single-rounding helpers: the device uses _rn intrinsics, so nvcc
// cannot fuse a*b + c), so both backends compute the same bits from the same inputs. The stage
// functions at the end are the CUDA kernels' bodies; the C++ runner also runs them on the host
// (augment/stage_functions_vs_cpu_kernel) and requires the CPU kernel's result bit for bit.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "byol/augment.h"
#include "byol/error.h"
// BYOL_HD and mul/add/sub/div: one rounding each (host builds have no -mfma, so GCC does not
// contract either; optim_math.h explains).
#include "optim_math.h"

namespace byol {
namespace augment_math {

using optim::add;
using optim::div;
using optim::mul;
using optim::sub;

// Luma weights of torchvision's rgb_to_grayscale (ITU-R 601-2).
constexpr float kLumaR = 0.2989f, kLumaG = 0.5870f, kLumaB = 0.1140f;
// PyTorch's cubic convolution coefficient (upsample_bicubic2d); the products below are exact.
constexpr float kCubicA = -0.75f;

// std::min / std::max, spelled out for device code (same operand order, so NaN and signed zeros
// come out as on the host).
BYOL_HD float min_value(float a, float b) { return b < a ? b : a; }
BYOL_HD float max_value(float a, float b) { return a < b ? b : a; }
BYOL_HD int min_index(int a, int b) { return b < a ? b : a; }
BYOL_HD int max_index(int a, int b) { return a < b ? b : a; }
BYOL_HD float clamp01(float x) { return min_value(1.0f, max_value(0.0f, x)); }

// uint8 -> [0, 1]. The CPU kernel tabulates it; the CUDA kernels keep the table in shared memory.
BYOL_HD float unit_value(int v) { return div(static_cast<float>(v), 255.0f); }

// One step of every weighted sum here (resampling, blur): acc + w * v.
BYOL_HD float tap_accumulate(float acc, float w, float v) { return add(acc, mul(w, v)); }

BYOL_HD float luma(float r, float g, float b) {
  return add(add(mul(kLumaR, r), mul(kLumaG, g)), mul(kLumaB, b));
}

// ---- 1. resized crop ---------------------------------------------------------------------------
// Interpolation taps of one output coordinate along one axis: source indices (absolute, already
// clamped into the crop box) and weights. Bilinear uses the first two.
struct Taps {
  int index[4];
  float weight[4];
};

// The crop box along one axis, resampled from in_len source pixels to out_len outputs.
// Coordinates are relative to the box's integer origin, in float, the way PyTorch computes them
// on the cropped tensor, so integer boxes reproduce crop-then-resize exactly; taps outside the
// box repeat its edge pixels [lo, hi].
struct AxisBox {
  int origin, lo, hi;
  float offset;  // box0 - origin: 0 for integer boxes
  float scale;   // box length / out_len
};

BYOL_HD AxisBox axis_box(float box0, float box_len, int in_len, int out_len) {
  AxisBox b;
  b.origin = static_cast<int>(floorf(box0));
  b.offset = sub(box0, static_cast<float>(b.origin));
  b.lo = max_index(0, b.origin);
  b.hi = min_index(in_len - 1, static_cast<int>(ceilf(add(box0, box_len))) - 1);
  b.scale = div(box_len, static_cast<float>(out_len));
  return b;
}

BYOL_HD float cubic_inner(float x) {  // |x| <= 1: ((a + 2) x - (a + 3)) x^2 + 1
  return add(mul(mul(sub(mul(kCubicA + 2, x), kCubicA + 3), x), x), 1.0f);
}
BYOL_HD float cubic_outer(float x) {  // 1 < |x| < 2: ((a x - 5a) x + 8a) x - 4a
  return sub(mul(add(mul(sub(mul(kCubicA, x), 5 * kCubicA), x), 8 * kCubicA), x), 4 * kCubicA);
}

// Taps of output coordinate o (align_corners=False: source = scale * (o + 0.5) - 0.5).
BYOL_HD Taps axis_taps(const AxisBox& b, int o, bool bicubic) {
  Taps t;
  float src = sub(mul(b.scale, add(static_cast<float>(o), 0.5f)), 0.5f);
  int i;
  if (bicubic) {
    src = add(src, b.offset);
    i = static_cast<int>(floorf(src));
    const float f = sub(src, static_cast<float>(i));
    const float g = sub(1.0f, f);
    t.weight[0] = cubic_outer(add(f, 1.0f));
    t.weight[1] = cubic_inner(f);
    t.weight[2] = cubic_inner(g);
    t.weight[3] = cubic_outer(add(g, 1.0f));
    for (int k = 0; k < 4; ++k) t.index[k] = min_index(b.hi, max_index(b.lo, b.origin + i - 1 + k));
  } else {
    // PyTorch clamps negative linear source coordinates to 0 (the same value as the edge taps
    // give, but this keeps the float rounding identical).
    if (src < 0.0f) src = 0.0f;
    src = add(src, b.offset);
    i = static_cast<int>(floorf(src));
    const float f = sub(src, static_cast<float>(i));
    t.weight[0] = sub(1.0f, f);
    t.weight[1] = f;
    t.weight[2] = t.weight[3] = 0.0f;
    t.index[0] = min_index(b.hi, max_index(b.lo, b.origin + i));
    t.index[1] = min_index(b.hi, max_index(b.lo, b.origin + i + 1));
    t.index[2] = t.index[3] = t.index[1];
  }
  return t;
}

// Output column x reads the taps of column o: the horizontal flip is folded into the taps.
BYOL_HD int flipped_column(int x, int out_w, bool flip) { return flip ? out_w - 1 - x : x; }

// One output pixel (C channels) of the resized crop, clamped to [0, 1]: per row tap the
// horizontal sum over the column taps, then the vertical sum of those, which is the order of
// operations of the CPU kernel's separable passes. src is the sample's (H, W, C) image.
BYOL_HD void resample_pixel(float* px, const uint8_t* src, int W, int C, const Taps& row, const Taps& col,
                            int ntaps, const float* to_unit) {
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int ky = 0; ky < ntaps; ++ky) {
    const uint8_t* in_row = src + static_cast<int64_t>(row.index[ky]) * W * C;
    for (int c = 0; c < C; ++c) {
      float h = 0.0f;
      for (int kx = 0; kx < ntaps; ++kx)
        h = tap_accumulate(h, col.weight[kx], to_unit[in_row[static_cast<int64_t>(col.index[kx]) * C + c]]);
      acc[c] = tap_accumulate(acc[c], row.weight[ky], h);
    }
  }
  for (int c = 0; c < C; ++c) px[c] = clamp01(acc[c]);
}

// ---- 3. color jitter, 4. grayscale (one pixel; clamped after each op) --------------------------
BYOL_HD float adjust_brightness(float x, float delta) { return clamp01(add(x, delta)); }

// Blend with the channel's mean over the image (TF adjust_contrast, the reference's op).
BYOL_HD float adjust_contrast(float x, float mean, float factor) {
  return clamp01(add(mul(factor, x), mul(sub(1.0f, factor), mean)));
}

// The mean adjust_contrast blends with, from the channel's sum in double over `pixels` values.
BYOL_HD float contrast_mean(double sum, int64_t pixels) {
  return static_cast<float>(div(sum, static_cast<double>(pixels)));
}

// Blend with the luma image (torchvision adjust_saturation). RGB only.
BYOL_HD void adjust_saturation(float* px, float factor) {
  const float gray = luma(px[0], px[1], px[2]);
  const float keep = sub(1.0f, factor);
  for (int c = 0; c < 3; ++c) px[c] = clamp01(add(mul(factor, px[c]), mul(keep, gray)));
}

// Rotates hue by `shift` turns through HSV (the formulas of Python's colorsys). RGB only.
BYOL_HD void adjust_hue(float* px, float shift) {
  float r = px[0], g = px[1], b = px[2];
  const float maxc = max_value(r, max_value(g, b)), minc = min_value(r, min_value(g, b));
  const float delta = sub(maxc, minc);
  if (delta <= 0.0f) return;  // gray pixel: hue undefined, the shift changes nothing
  const float v = maxc, s = div(delta, maxc);
  float h;
  if (r == maxc) h = div(sub(g, b), delta);
  else if (g == maxc) h = add(2.0f, div(sub(b, r), delta));
  else h = add(4.0f, div(sub(r, g), delta));
  h = add(div(h, 6.0f), shift);
  h = sub(h, floorf(h));
  const float h6 = mul(h, 6.0f);
  const int sector = static_cast<int>(h6);
  const float f = sub(h6, static_cast<float>(sector));
  const float pp = mul(v, sub(1.0f, s)), q = mul(v, sub(1.0f, mul(s, f))),
              t = mul(v, sub(1.0f, mul(s, sub(1.0f, f))));
  switch (sector % 6) {
    case 0: r = v; g = t; b = pp; break;
    case 1: r = q; g = v; b = pp; break;
    case 2: r = pp; g = v; b = t; break;
    case 3: r = pp; g = q; b = v; break;
    case 4: r = t; g = pp; b = v; break;
    default: r = v; g = pp; b = q; break;
  }
  px[0] = clamp01(r);
  px[1] = clamp01(g);
  px[2] = clamp01(b);
}

BYOL_HD void to_grayscale(float* px) { px[0] = px[1] = px[2] = luma(px[0], px[1], px[2]); }

// Jitter op `op` (JitterOp) on one pixel. `means` (C floats) is only read by contrast: the
// channel means of the whole image as it is at that point of the order. One-channel images skip
// saturation and hue (identities on gray).
BYOL_HD void jitter_op(float* px, int C, int op, const AugmentParams& p, const float* means) {
  switch (op) {
    case kBrightness:
      for (int c = 0; c < C; ++c) px[c] = adjust_brightness(px[c], p.brightness);
      break;
    case kContrast:
      for (int c = 0; c < C; ++c) px[c] = adjust_contrast(px[c], means[c], p.contrast);
      break;
    case kSaturation:
      if (C == 3) adjust_saturation(px, p.saturation);
      break;
    case kHue:
      if (C == 3) adjust_hue(px, p.hue);
      break;
  }
}

// Position of contrast in the jitter order: the ops before it are pointwise and run with the
// crop; contrast needs the image's means, so it and the ops after it run in a later pass.
BYOL_HD int contrast_position(const AugmentParams& p) {
  for (int k = 0; k < 4; ++k)
    if (p.jitter_order[k] == kContrast) return k;
  return 4;
}

// ---- 5. Gaussian blur --------------------------------------------------------------------------
// Normalized taps exp(-x^2 / (2 sigma^2)), x = -r..r (torchvision's kernel), into w[size]. Host
// only: both backends evaluate them with the host's exp (the CUDA backend uploads them with the
// parameters), so they are the same floats everywhere.
inline void gaussian_taps(float* w, int size, float sigma) {
  const int radius = size / 2;
  double total = 0;
  for (int k = 0; k < size; ++k) {
    const double x = static_cast<double>(k - radius) / sigma;
    w[k] = static_cast<float>(std::exp(-0.5 * x * x));
    total += w[k];
  }
  for (int k = 0; k < size; ++k) w[k] = static_cast<float>(w[k] / total);
}

// Reflect padding without repeating the edge (…2 1 | 0 1 2 … n-1 | n-2 …); valid for a radius
// below the length, which validate_augment_params guarantees.
BYOL_HD int reflect(int i, int n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// sum_k w[k] * line[reflect(i + k - size/2, n) * stride], k = 0..size-1 in order.
BYOL_HD float blur_tap_sum(const float* line, int64_t stride, int i, int n, const float* w, int size) {
  const int radius = size / 2;
  float acc = 0.0f;
  for (int k = 0; k < size; ++k) acc = tap_accumulate(acc, w[k], line[reflect(i + k - radius, n) * stride]);
  return acc;
}

// ---- 6. solarize, 7. clamp, 8. normalize -------------------------------------------------------
BYOL_HD float finish(float x, bool solarize, float mean, float std) {
  if (solarize && x >= 0.5f) x = sub(1.0f, x);
  return div(sub(clamp01(x), mean), std);
}

// ---- the CUDA kernels' stages ------------------------------------------------------------------
// img is one sample's (out_h, out_w, C) float image and src its (H, W, C) uint8 source; the
// stages run in this order, each over every pixel (or element) before the next starts:
//   crop_stage -> [channel sums -> contrast_mean, samples with jitter] -> color_stage
//   -> [blur_rows_stage -> blur_columns_stage, samples with blur]
// Samples without blur are finished (normalized) by color_stage; the others by the blur.

// Pixel (y, x): resized crop, flip, then the jitter ops ordered before contrast.
BYOL_HD void crop_stage(float* img, const uint8_t* src, const AugmentParams& p, int y, int x, int H, int W,
                        int C, int out_h, int out_w, const float* to_unit) {
  const bool bicubic = p.interpolation == static_cast<int32_t>(Interpolation::bicubic);
  const Taps row = axis_taps(axis_box(p.crop_y0, p.crop_h, H, out_h), y, bicubic);
  const Taps col = axis_taps(axis_box(p.crop_x0, p.crop_w, W, out_w), flipped_column(x, out_w, p.flip != 0), bicubic);
  float px[3];
  resample_pixel(px, src, W, C, row, col, bicubic ? 4 : 2, to_unit);
  if (p.jitter)
    for (int k = 0, end = contrast_position(p); k < end; ++k) jitter_op(px, C, p.jitter_order[k], p, nullptr);
  float* dst = img + (static_cast<int64_t>(y) * out_w + x) * C;
  for (int c = 0; c < C; ++c) dst[c] = px[c];
}

// One pixel (C floats, in place): contrast and the jitter ops after it (means: the sample's
// channel means after crop_stage), grayscale, then normalization unless the sample blurs.
BYOL_HD void color_stage(float* pixel, const AugmentParams& p, int C, const float* means) {
  float px[3];
  for (int c = 0; c < C; ++c) px[c] = pixel[c];
  if (p.jitter)
    for (int k = contrast_position(p); k < 4; ++k) jitter_op(px, C, p.jitter_order[k], p, means);
  if (p.grayscale && C == 3) to_grayscale(px);
  for (int c = 0; c < C; ++c) pixel[c] = p.blur ? px[c] : finish(px[c], p.solarize != 0, p.mean[c], p.std[c]);
}

// Element (y, x, c) of the horizontal blur pass; wx holds p.blur_size_w taps.
BYOL_HD float blur_rows_stage(const float* img, const float* wx, int size_w, int y, int x, int c, int out_w, int C) {
  return blur_tap_sum(img + static_cast<int64_t>(y) * out_w * C + c, C, x, out_w, wx, size_w);
}

// Element (y, x, c) of the vertical blur pass over the horizontal pass's result, normalized.
BYOL_HD float blur_columns_stage(const float* rows, const float* wy, const AugmentParams& p, int y, int x, int c,
                                 int out_h, int out_w, int C) {
  const float v = blur_tap_sum(rows + static_cast<int64_t>(x) * C + c, static_cast<int64_t>(out_w) * C, y, out_h, wy,
                               p.blur_size_h);
  return finish(v, p.solarize != 0, p.mean[c], p.std[c]);
}

// ---- argument checks (host) --------------------------------------------------------------------
// Backend::augment's checks, shared so that both backends word errors alike: `device` prefixes
// every message ("" on the CPU, "cuda: "). Validates every parameter set before any work, so a
// bad sample fails the whole call. Returns false when N == 0 (nothing to do).
inline bool check_augment_args(const char* device, const float* out, const uint8_t* images,
                               const AugmentParams* params, int N, int H, int W, int C, int out_h, int out_w) {
  BYOL_CHECK(N >= 0, device, "augment: expected N >= 0 but received ", N);
  BYOL_CHECK(H >= 1 && W >= 1, device, "augment: expected images of at least 1x1 but received ", H, "x", W);
  BYOL_CHECK(C == 1 || C == 3, device, "augment: expected 1 or 3 channels but received ", C);
  BYOL_CHECK(out_h >= 1 && out_w >= 1, device, "augment: expected an output size of at least 1x1 but received ",
             out_h, "x", out_w);
  if (N == 0) return false;
  BYOL_CHECK(out != nullptr && images != nullptr && params != nullptr, device,
             "augment: expected non-null out, images and params");
  for (int n = 0; n < N; ++n) {
    try {
      validate_augment_params(params[n], n, H, W, C, out_h, out_w);
    } catch (const Error& e) {
      if (*device == '\0') throw;
      throw Error(std::string(device) + e.what());
    }
  }
  return true;
}

}  // namespace augment_math
}  // namespace byol
