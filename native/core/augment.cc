// augment.cc: augmentation presets, config/parameter validation and the Philox-keyed
// parameter draws of byol/augment.h. Contract: draws depend only on (config, seed, epoch,
// sample index, view, H, W); every uniform comes from a fixed slot of the sample's Philox
// stream, so adding or skipping an op never shifts the others' randomness.
#include "byol/augment.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace byol {

const char* interpolation_name(Interpolation i) {
  switch (i) {
    case Interpolation::bilinear: return "bilinear";
    case Interpolation::bicubic: return "bicubic";
  }
  return "unknown";
}

// ---------------------------------------------------------------- presets

AugmentConfig byol_view_config(int view, int out_h, int out_w) {
  BYOL_CHECK(view == 1 || view == 2, "byol_view_config: expected view 1 or 2 but received ", view);
  AugmentConfig c;
  c.out_h = out_h;
  c.out_w = out_w;
  c.blur_p = view == 1 ? 1.0f : 0.1f;
  c.solarize_p = view == 1 ? 0.0f : 0.2f;
  return c;
}

AugmentConfig cifar_view_config(int view, int out_h, int out_w) {
  AugmentConfig c = byol_view_config(view, out_h, out_w);
  c.interpolation = Interpolation::bicubic;
  c.blur_p = 0.0f;
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, stdev[3] = {0.2470f, 0.2435f, 0.2616f};
  std::copy(mean, mean + 3, c.mean);
  std::copy(stdev, stdev + 3, c.std);
  return c;
}

AugmentConfig grayscale_view_config(int view, int out_h, int out_w) {
  AugmentConfig c = byol_view_config(view, out_h, out_w);
  c.channels = 1;
  c.blur_p = 0.0f;
  c.saturation = 0.0f;
  c.hue = 0.0f;
  c.grayscale_p = 0.0f;
  c.mean[0] = 0.2860f;  // Fashion-MNIST training set statistics
  c.std[0] = 0.3530f;
  c.mean[1] = c.mean[2] = 0.0f;
  c.std[1] = c.std[2] = 1.0f;
  return c;
}

// ---------------------------------------------------------------- validation

namespace {

void check_probability(const char* name, float p) {
  BYOL_CHECK(std::isfinite(p) && p >= 0.0f && p <= 1.0f, "augment config: expected ", name,
             " in [0, 1] but received ", p);
}

void check_range(const char* name, float lo, float hi, float min_allowed, float max_allowed) {
  BYOL_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo >= min_allowed && hi <= max_allowed &&
                 lo <= hi,
             "augment config: expected ", name, " to be a range [min, max] with ", min_allowed,
             " <= min <= max <= ", max_allowed, " but received [", lo, ", ", hi, "]");
}

}  // namespace

void validate_augment_config(const AugmentConfig& c) {
  BYOL_CHECK(c.out_h >= 1 && c.out_h <= 16384 && c.out_w >= 1 && c.out_w <= 16384,
             "augment config: expected output size in [1, 16384] but received ", c.out_h, "x",
             c.out_w);
  BYOL_CHECK(c.interpolation == Interpolation::bilinear || c.interpolation == Interpolation::bicubic,
             "augment config: expected interpolation bilinear (0) or bicubic (1) but received ",
             static_cast<int>(c.interpolation));
  check_range("crop scale", c.crop_scale_min, c.crop_scale_max, 0.0f, 1.0f);
  BYOL_CHECK(c.crop_scale_max > 0.0f, "augment config: expected crop scale max > 0 but received ",
             c.crop_scale_max);
  check_range("crop ratio", c.crop_ratio_min, c.crop_ratio_max, 1e-3f, 1e3f);
  check_probability("flip probability", c.flip_p);
  check_probability("color jitter probability", c.jitter_p);
  BYOL_CHECK(std::isfinite(c.brightness) && c.brightness >= 0.0f && c.brightness <= 1.0f,
             "augment config: expected brightness in [0, 1] but received ", c.brightness);
  BYOL_CHECK(std::isfinite(c.contrast) && c.contrast >= 0.0f && c.contrast <= 10.0f,
             "augment config: expected contrast in [0, 10] but received ", c.contrast);
  BYOL_CHECK(std::isfinite(c.saturation) && c.saturation >= 0.0f && c.saturation <= 10.0f,
             "augment config: expected saturation in [0, 10] but received ", c.saturation);
  BYOL_CHECK(std::isfinite(c.hue) && c.hue >= 0.0f && c.hue <= 0.5f,
             "augment config: expected hue in [0, 0.5] but received ", c.hue);
  check_probability("grayscale probability", c.grayscale_p);
  check_probability("blur probability", c.blur_p);
  check_range("blur sigma", c.blur_sigma_min, c.blur_sigma_max, 1e-3f, 1e3f);
  BYOL_CHECK(std::isfinite(c.blur_kernel_fraction) && c.blur_kernel_fraction >= 0.0f &&
                 c.blur_kernel_fraction <= 1.0f,
             "augment config: expected blur kernel fraction in [0, 1] but received ",
             c.blur_kernel_fraction);
  check_probability("solarize probability", c.solarize_p);
  BYOL_CHECK(c.channels == 1 || c.channels == 3, "augment config: expected channels 1 or 3 but received ",
             c.channels);
  for (int ch = 0; ch < c.channels; ++ch) {
    BYOL_CHECK(std::isfinite(c.mean[ch]), "augment config: expected a finite mean[", ch,
               "] but received ", c.mean[ch]);
    BYOL_CHECK(std::isfinite(c.std[ch]) && c.std[ch] > 0.0f, "augment config: expected std[", ch,
               "] > 0 but received ", c.std[ch]);
  }
}

void validate_augment_params(const AugmentParams& p, int index, int H, int W, int C, int out_h,
                             int out_w) {
  // A box edge may exceed the image by float rounding of an integer box, never by more.
  const float slack = 1e-3f;
  BYOL_CHECK(std::isfinite(p.crop_x0) && std::isfinite(p.crop_y0) && std::isfinite(p.crop_w) &&
                 std::isfinite(p.crop_h) && p.crop_w > 0 && p.crop_h > 0 && p.crop_x0 >= -slack &&
                 p.crop_y0 >= -slack && p.crop_x0 + p.crop_w <= W + slack &&
                 p.crop_y0 + p.crop_h <= H + slack,
             "augment params[", index, "]: expected a crop box inside the ", H, "x", W,
             " image but received x0=", p.crop_x0, " y0=", p.crop_y0, " w=", p.crop_w,
             " h=", p.crop_h);
  BYOL_CHECK(p.interpolation == static_cast<int32_t>(Interpolation::bilinear) ||
                 p.interpolation == static_cast<int32_t>(Interpolation::bicubic),
             "augment params[", index, "]: expected interpolation 0 (bilinear) or 1 (bicubic) but received ",
             p.interpolation);
  if (p.jitter) {
    bool seen[4] = {false, false, false, false};
    for (int k = 0; k < 4; ++k) {
      int op = p.jitter_order[k];
      BYOL_CHECK(op >= 0 && op < 4 && !seen[op], "augment params[", index,
                 "]: expected jitter_order to be a permutation of 0..3 but entry ", k, " is ", op);
      seen[op] = true;
    }
    BYOL_CHECK(std::isfinite(p.brightness) && std::isfinite(p.contrast) && p.contrast >= 0 &&
                   std::isfinite(p.saturation) && p.saturation >= 0 && std::isfinite(p.hue) &&
                   std::fabs(p.hue) <= 0.5f,
               "augment params[", index, "]: expected finite jitter factors (contrast, saturation >= 0, |hue| <= 0.5) but received brightness=",
               p.brightness, " contrast=", p.contrast, " saturation=", p.saturation, " hue=", p.hue);
  }
  if (p.blur) {
    BYOL_CHECK(std::isfinite(p.blur_sigma) && p.blur_sigma > 0, "augment params[", index,
               "]: expected blur_sigma > 0 but received ", p.blur_sigma);
    BYOL_CHECK(p.blur_size_h >= 1 && p.blur_size_h % 2 == 1 && p.blur_size_h < 2 * out_h &&
                   p.blur_size_w >= 1 && p.blur_size_w % 2 == 1 && p.blur_size_w < 2 * out_w,
               "augment params[", index, "]: expected odd blur sizes below twice the ", out_h, "x",
               out_w, " output (reflect padding) but received ", p.blur_size_h, "x", p.blur_size_w);
  }
  for (int ch = 0; ch < C; ++ch)
    BYOL_CHECK(std::isfinite(p.mean[ch]) && std::isfinite(p.std[ch]) && p.std[ch] > 0,
               "augment params[", index, "]: expected finite mean and std > 0 for channel ", ch,
               " but received mean=", p.mean[ch], " std=", p.std[ch]);
}

// ---------------------------------------------------------------- Philox

namespace {

inline void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

}  // namespace

Philox4x32 philox4x32_10(const uint32_t counter[4], const uint32_t key[2]) {
  const uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  const uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kM0, c0, &hi0, &lo0);
    mulhilo32(kM1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

// ---------------------------------------------------------------- draws

namespace {

// Slots of the per-(sample, view) uniform stream. Fixed positions keep each op's randomness
// independent of which other ops are enabled; tools/ref_augment.py mirrors this table.
enum Slot : int {
  kSlotCropArea = 0,      // 10 attempts: area at 2k, log-ratio at 2k + 1
  kSlotCropTop = 20,
  kSlotCropLeft = 21,
  kSlotFlip = 22,
  kSlotJitter = 23,
  kSlotBrightness = 24,
  kSlotContrast = 25,
  kSlotSaturation = 26,
  kSlotHue = 27,
  kSlotOrder = 28,        // 3 Fisher-Yates draws
  kSlotGrayscale = 31,
  kSlotBlur = 32,
  kSlotSigma = 33,
  kSlotSolarize = 34,
  kNumSlots = 35,
};
constexpr int kCropAttempts = 10;

class UniformStream {
 public:
  UniformStream(uint64_t seed, uint64_t epoch, uint64_t sample_index, int view) {
    key_[0] = static_cast<uint32_t>(seed);
    key_[1] = static_cast<uint32_t>(seed >> 32);
    const uint32_t base[4] = {0, static_cast<uint32_t>(view), static_cast<uint32_t>(sample_index),
                              static_cast<uint32_t>(epoch)};
    for (int block = 0; block * 4 < kNumSlots; ++block) {
      uint32_t counter[4] = {static_cast<uint32_t>(block), base[1], base[2], base[3]};
      Philox4x32 r = philox4x32_10(counter, key_);
      for (int k = 0; k < 4 && block * 4 + k < kNumSlots; ++k) words_[block * 4 + k] = r.v[k];
    }
  }
  // Uniform in [0, 1) with 32 random bits; exact in double, so identical everywhere.
  double uniform(int slot) const { return words_[slot] * (1.0 / 4294967296.0); }
  double uniform(int slot, double lo, double hi) const { return lo + (hi - lo) * uniform(slot); }
  // Integer in [0, n): floor(u * n); the bias is below n / 2^32.
  int64_t below(int slot, int64_t n) const {
    return std::min<int64_t>(n - 1, static_cast<int64_t>(uniform(slot) * static_cast<double>(n)));
  }

 private:
  uint32_t key_[2];
  uint32_t words_[kNumSlots];
};

// Python's round(): to nearest, ties to even (nearbyint under the default rounding mode).
inline int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

int blur_taps(int side, float fraction) {
  int kernel = static_cast<int>(std::floor(static_cast<double>(side) * static_cast<double>(fraction)));
  return 2 * (kernel / 2) + 1;
}

}  // namespace

namespace {

// The draw itself; callers have validated the config.
AugmentParams draw_validated(const AugmentConfig& c, uint64_t seed, uint64_t epoch,
                             uint64_t sample_index, int view, int H, int W) {
  BYOL_CHECK(H >= 1 && W >= 1, "draw_augment_params: expected an image of at least 1x1 but received ",
             H, "x", W);
  BYOL_CHECK(sample_index <= 0xFFFFFFFFull, "draw_augment_params: expected sample index < 2^32 but received ",
             sample_index);
  BYOL_CHECK(epoch <= 0xFFFFFFFFull, "draw_augment_params: expected epoch < 2^32 but received ", epoch);
  BYOL_CHECK(view >= 0, "draw_augment_params: expected view >= 0 but received ", view);
  const UniformStream u(seed, epoch, sample_index, view);
  AugmentParams p;

  // Random resized crop (torchvision RandomResizedCrop.get_params).
  const double area = static_cast<double>(H) * static_cast<double>(W);
  const double log_ratio_lo = std::log(static_cast<double>(c.crop_ratio_min));
  const double log_ratio_hi = std::log(static_cast<double>(c.crop_ratio_max));
  bool found = false;
  int64_t top = 0, left = 0, h = H, w = W;
  for (int attempt = 0; attempt < kCropAttempts && !found; ++attempt) {
    double target_area = area * u.uniform(kSlotCropArea + 2 * attempt, c.crop_scale_min, c.crop_scale_max);
    double aspect = std::exp(u.uniform(kSlotCropArea + 2 * attempt + 1, log_ratio_lo, log_ratio_hi));
    int64_t cw = round_half_even(std::sqrt(target_area * aspect));
    int64_t ch = round_half_even(std::sqrt(target_area / aspect));
    if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
      w = cw;
      h = ch;
      top = u.below(kSlotCropTop, H - h + 1);
      left = u.below(kSlotCropLeft, W - w + 1);
      found = true;
    }
  }
  if (!found) {
    // Center crop at the nearest allowed aspect ratio.
    const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
    if (in_ratio < c.crop_ratio_min) {
      w = W;
      h = round_half_even(w / static_cast<double>(c.crop_ratio_min));
    } else if (in_ratio > c.crop_ratio_max) {
      h = H;
      w = round_half_even(h * static_cast<double>(c.crop_ratio_max));
    } else {
      w = W;
      h = H;
    }
    // Rounding can reach 0 on a 1-pixel side; keep the box non-empty and inside.
    h = std::min<int64_t>(std::max<int64_t>(h, 1), H);
    w = std::min<int64_t>(std::max<int64_t>(w, 1), W);
    top = (H - h) / 2;
    left = (W - w) / 2;
  }
  p.crop_x0 = static_cast<float>(left);
  p.crop_y0 = static_cast<float>(top);
  p.crop_w = static_cast<float>(w);
  p.crop_h = static_cast<float>(h);

  p.flip = u.uniform(kSlotFlip) < c.flip_p;

  p.jitter = u.uniform(kSlotJitter) < c.jitter_p;
  p.brightness = static_cast<float>(u.uniform(kSlotBrightness, -c.brightness, c.brightness));
  p.contrast = static_cast<float>(
      u.uniform(kSlotContrast, std::max(0.0, 1.0 - c.contrast), 1.0 + c.contrast));
  p.saturation = static_cast<float>(
      u.uniform(kSlotSaturation, std::max(0.0, 1.0 - c.saturation), 1.0 + c.saturation));
  p.hue = static_cast<float>(u.uniform(kSlotHue, -c.hue, c.hue));
  // Uniform permutation (Fisher-Yates from the back).
  int32_t order[4] = {kBrightness, kContrast, kSaturation, kHue};
  for (int k = 3; k >= 1; --k) {
    int64_t j = u.below(kSlotOrder + (3 - k), k + 1);
    std::swap(order[k], order[j]);
  }
  std::copy(order, order + 4, p.jitter_order);

  p.grayscale = u.uniform(kSlotGrayscale) < c.grayscale_p;
  p.blur = u.uniform(kSlotBlur) < c.blur_p;
  p.blur_sigma = static_cast<float>(u.uniform(kSlotSigma, c.blur_sigma_min, c.blur_sigma_max));
  p.blur_size_h = blur_taps(c.out_h, c.blur_kernel_fraction);
  p.blur_size_w = blur_taps(c.out_w, c.blur_kernel_fraction);
  p.solarize = u.uniform(kSlotSolarize) < c.solarize_p;

  for (int ch = 0; ch < 3; ++ch) {
    p.mean[ch] = ch < c.channels ? c.mean[ch] : 0.0f;
    p.std[ch] = ch < c.channels ? c.std[ch] : 1.0f;
  }
  p.interpolation = static_cast<int32_t>(c.interpolation);
  return p;
}

}  // namespace

AugmentParams draw_augment_params(const AugmentConfig& config, uint64_t seed, uint64_t epoch,
                                  uint64_t sample_index, int view, int H, int W) {
  validate_augment_config(config);
  return draw_validated(config, seed, epoch, sample_index, view, H, W);
}

void draw_augment_params(AugmentParams* params, const AugmentConfig& config, uint64_t seed,
                         uint64_t epoch, const int64_t* sample_indices, int n, int view, int H,
                         int W) {
  validate_augment_config(config);
  BYOL_CHECK(n >= 0, "draw_augment_params: expected n >= 0 but received ", n);
  for (int i = 0; i < n; ++i) {
    BYOL_CHECK(sample_indices[i] >= 0, "draw_augment_params: expected sample_indices[", i,
               "] >= 0 but received ", sample_indices[i]);
    params[i] = draw_validated(config, seed, epoch, static_cast<uint64_t>(sample_indices[i]),
                               view, H, W);
  }
}

}  // namespace byol
