// augment_cpu.cc: CPU kernel for BYOL's augmentations over a uint8 NHWC batch.
// Contract: byol/augment.h's pipeline, bit-for-bit independent of thread count (one sample per
// thread, fixed summation order). Resampling mirrors PyTorch's upsample_bilinear2d /
// upsample_bicubic2d (align_corners=False, antialias off) applied to the cropped box.
#include "augment_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

namespace byol {
namespace cpu {

namespace {

constexpr float kLumaR = 0.2989f, kLumaG = 0.5870f, kLumaB = 0.1140f;

inline float clamp01(float x) { return std::min(1.0f, std::max(0.0f, x)); }

// Interpolation taps of one output coordinate along one axis: source indices (absolute,
// already clamped into the crop box) and weights.
struct Taps {
  int index[4];
  float weight[4];
};

// PyTorch's cubic convolution kernel, a = -0.75 (upsample_bicubic2d).
constexpr float kCubicA = -0.75f;
inline float cubic_inner(float x) { return ((kCubicA + 2) * x - (kCubicA + 3)) * x * x + 1; }
inline float cubic_outer(float x) {
  return ((kCubicA * x - 5 * kCubicA) * x + 8 * kCubicA) * x - 4 * kCubicA;
}

// Taps for `out_len` outputs resampling the box [box0, box0 + box_len) of an axis of length
// `in_len`. Coordinates are computed relative to the box's integer origin in float, the way
// PyTorch does on the cropped tensor, so integer boxes reproduce crop-then-resize exactly.
std::vector<Taps> axis_taps(float box0, float box_len, int in_len, int out_len, bool bicubic,
                            bool reverse) {
  const int origin = static_cast<int>(std::floor(box0));
  const float offset = box0 - static_cast<float>(origin);  // 0 for integer boxes
  const int lo = std::max(0, origin);
  const int hi = std::min(in_len - 1, static_cast<int>(std::ceil(box0 + box_len)) - 1);
  const float scale = box_len / static_cast<float>(out_len);
  std::vector<Taps> taps(out_len);
  auto clamp_index = [&](int local) { return std::min(hi, std::max(lo, origin + local)); };
  for (int o = 0; o < out_len; ++o) {
    Taps& t = taps[reverse ? out_len - 1 - o : o];
    float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
    if (bicubic) {
      src += offset;
      int i = static_cast<int>(std::floor(src));
      float f = src - static_cast<float>(i);
      float g = 1.0f - f;
      t.weight[0] = cubic_outer(f + 1.0f);
      t.weight[1] = cubic_inner(f);
      t.weight[2] = cubic_inner(g);
      t.weight[3] = cubic_outer(g + 1.0f);
      for (int k = 0; k < 4; ++k) t.index[k] = clamp_index(i - 1 + k);
    } else {
      // PyTorch clamps negative linear source coordinates to 0 (the same value as the edge
      // taps give, but this keeps the float rounding identical).
      if (src < 0.0f) src = 0.0f;
      src += offset;
      int i = static_cast<int>(std::floor(src));
      float f = src - static_cast<float>(i);
      t.weight[0] = 1.0f - f;
      t.weight[1] = f;
      t.weight[2] = t.weight[3] = 0.0f;
      t.index[0] = clamp_index(i);
      t.index[1] = clamp_index(i + 1);
      t.index[2] = t.index[3] = t.index[1];
    }
  }
  return taps;
}

// Resized crop (+ flip folded into the column taps) into img (out_h, out_w, C), clamped to
// [0, 1]. Horizontal pass over the referenced source rows, then vertical, as PyTorch nests it.
void resized_crop(float* img, std::vector<float>& rows, const uint8_t* src, const AugmentParams& p,
                  int H, int W, int C, int out_h, int out_w, const float* to_unit) {
  const bool bicubic = p.interpolation == static_cast<int32_t>(Interpolation::bicubic);
  const int ntaps = bicubic ? 4 : 2;
  std::vector<Taps> cols = axis_taps(p.crop_x0, p.crop_w, W, out_w, bicubic, p.flip != 0);
  std::vector<Taps> rws = axis_taps(p.crop_y0, p.crop_h, H, out_h, bicubic, false);
  int row_lo = H, row_hi = -1;
  for (const Taps& t : rws)
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
      const Taps& t = cols[x];
      for (int c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (int k = 0; k < ntaps; ++k) acc += t.weight[k] * to_unit[in_row[t.index[k] * C + c]];
        out_row[x * C + c] = acc;
      }
    }
  }
  // Tap-major accumulation keeps every inner loop contiguous (vectorized) and adds the taps
  // in the same order for every element.
  for (int y = 0; y < out_h; ++y) {
    const Taps& t = rws[y];
    float* out_row = img + static_cast<size_t>(y) * row_stride;
    std::fill(out_row, out_row + row_stride, 0.0f);
    for (int k = 0; k < ntaps; ++k) {
      const float w = t.weight[k];
      const float* in_row = rows.data() + static_cast<size_t>(t.index[k] - row_lo) * row_stride;
      for (size_t e = 0; e < row_stride; ++e) out_row[e] += w * in_row[e];
    }
    for (size_t e = 0; e < row_stride; ++e) out_row[e] = clamp01(out_row[e]);
  }
}

void adjust_brightness(float* img, size_t n, float delta) {
  for (size_t e = 0; e < n; ++e) img[e] = clamp01(img[e] + delta);
}

// Blend with each channel's mean over the image (TF adjust_contrast, the reference's op).
void adjust_contrast(float* img, size_t pixels, int C, float factor) {
  double sum[3] = {0, 0, 0};
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < C; ++c) sum[c] += img[i * C + c];
  float mean[3];
  for (int c = 0; c < C; ++c) mean[c] = static_cast<float>(sum[c] / static_cast<double>(pixels));
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < C; ++c)
      img[i * C + c] = clamp01(factor * img[i * C + c] + (1.0f - factor) * mean[c]);
}

// Blend with the luma image (torchvision adjust_saturation). RGB only.
void adjust_saturation(float* img, size_t pixels, float factor) {
  for (size_t i = 0; i < pixels; ++i) {
    float* px = img + i * 3;
    float gray = kLumaR * px[0] + kLumaG * px[1] + kLumaB * px[2];
    for (int c = 0; c < 3; ++c) px[c] = clamp01(factor * px[c] + (1.0f - factor) * gray);
  }
}

// Rotates hue by `shift` turns through HSV (the formulas of Python's colorsys). RGB only.
void adjust_hue(float* img, size_t pixels, float shift) {
  for (size_t i = 0; i < pixels; ++i) {
    float* px = img + i * 3;
    float r = px[0], g = px[1], b = px[2];
    float maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    float delta = maxc - minc;
    if (delta <= 0.0f) continue;  // gray pixel: hue undefined, the shift changes nothing
    float v = maxc, s = delta / maxc;
    float h;
    if (r == maxc) h = (g - b) / delta;
    else if (g == maxc) h = 2.0f + (b - r) / delta;
    else h = 4.0f + (r - g) / delta;
    h = h / 6.0f + shift;
    h -= std::floor(h);
    float h6 = h * 6.0f;
    int sector = static_cast<int>(h6);
    float f = h6 - static_cast<float>(sector);
    float pp = v * (1.0f - s), q = v * (1.0f - s * f), t = v * (1.0f - s * (1.0f - f));
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
}

void to_grayscale(float* img, size_t pixels) {
  for (size_t i = 0; i < pixels; ++i) {
    float* px = img + i * 3;
    float gray = kLumaR * px[0] + kLumaG * px[1] + kLumaB * px[2];
    px[0] = px[1] = px[2] = gray;
  }
}

// Normalized Gaussian taps exp(-x^2 / (2 sigma^2)), x = -r..r (torchvision's kernel).
std::vector<float> gaussian_taps(int size, float sigma) {
  std::vector<float> w(size);
  const int radius = size / 2;
  double total = 0;
  for (int k = 0; k < size; ++k) {
    double x = static_cast<double>(k - radius) / sigma;
    w[k] = static_cast<float>(std::exp(-0.5 * x * x));
    total += w[k];
  }
  for (float& v : w) v = static_cast<float>(v / total);
  return w;
}

// Reflect padding without repeating the edge (…2 1 | 0 1 2 … n-1 | n-2 …); valid for a
// radius below the length, which validate_augment_params guarantees.
inline int reflect(int i, int n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// Separable Gaussian blur, horizontal pass into tmp, vertical pass back into img. Both passes
// accumulate tap by tap over contiguous rows (vectorized); only the reflected border columns
// of the horizontal pass gather one value at a time. Per element, taps are summed in the same
// order everywhere.
void gaussian_blur(float* img, std::vector<float>& tmp, int Hh, int Ww, int C, float sigma,
                   int size_h, int size_w) {
  const std::vector<float> wx = gaussian_taps(size_w, sigma), wy = gaussian_taps(size_h, sigma);
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
      for (size_t j = 0; j < e_hi - e_lo; ++j) dst[j] += w * src[j];
    }
    auto border = [&](int x) {
      for (int c = 0; c < C; ++c) {
        float acc = 0.0f;
        for (int k = 0; k < size_w; ++k) acc += wx[k] * in_row[reflect(x + k - rx, Ww) * C + c];
        out_row[x * C + c] = acc;
      }
    };
    for (int x = 0; x < x_lo; ++x) border(x);
    for (int x = x_hi; x < Ww; ++x) border(x);
  }
  for (int y = 0; y < Hh; ++y) {
    float* out_row = img + y * row_stride;
    std::fill(out_row, out_row + row_stride, 0.0f);
    for (int k = 0; k < size_h; ++k) {
      const float w = wy[k];
      const float* src = tmp.data() + reflect(y + k - ry, Hh) * row_stride;
      for (size_t e = 0; e < row_stride; ++e) out_row[e] += w * src[e];
    }
  }
}

// One sample through the whole pipeline into img (out_h, out_w, C).
void augment_one(float* img, std::vector<float>& scratch, const uint8_t* src, const AugmentParams& p,
                 int H, int W, int C, int out_h, int out_w, const float* to_unit) {
  const size_t pixels = static_cast<size_t>(out_h) * out_w;
  const size_t out_size = pixels * C;
  resized_crop(img, scratch, src, p, H, W, C, out_h, out_w, to_unit);
  if (p.jitter) {
    for (int k = 0; k < 4; ++k) {
      switch (p.jitter_order[k]) {
        case kBrightness: adjust_brightness(img, out_size, p.brightness); break;
        case kContrast: adjust_contrast(img, pixels, C, p.contrast); break;
        case kSaturation: if (C == 3) adjust_saturation(img, pixels, p.saturation); break;
        case kHue: if (C == 3) adjust_hue(img, pixels, p.hue); break;
      }
    }
  }
  if (p.grayscale && C == 3) to_grayscale(img, pixels);
  if (p.blur) gaussian_blur(img, scratch, out_h, out_w, C, p.blur_sigma, p.blur_size_h, p.blur_size_w);
  const bool solarize = p.solarize != 0;
  for (size_t i = 0; i < pixels; ++i)
    for (int c = 0; c < C; ++c) {
      float x = img[i * C + c];
      if (solarize && x >= 0.5f) x = 1.0f - x;
      img[i * C + c] = (clamp01(x) - p.mean[c]) / p.std[c];
    }
}

}  // namespace

void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W,
             int C, int out_h, int out_w) {
  BYOL_CHECK(N >= 0, "augment: expected N >= 0 but received ", N);
  BYOL_CHECK(H >= 1 && W >= 1, "augment: expected images of at least 1x1 but received ", H, "x", W);
  BYOL_CHECK(C == 1 || C == 3, "augment: expected 1 or 3 channels but received ", C);
  BYOL_CHECK(out_h >= 1 && out_w >= 1, "augment: expected an output size of at least 1x1 but received ",
             out_h, "x", out_w);
  if (N == 0) return;
  BYOL_CHECK(out != nullptr && images != nullptr && params != nullptr,
             "augment: expected non-null out, images and params");
  // Every parameter set is checked before any work, so a bad sample fails the whole call.
  for (int n = 0; n < N; ++n) validate_augment_params(params[n], n, H, W, C, out_h, out_w);

  float to_unit[256];
  for (int v = 0; v < 256; ++v) to_unit[v] = static_cast<float>(v) / 255.0f;
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
