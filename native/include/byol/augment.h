// augment.h: BYOL's per-sample image augmentations (BYOL.md "Augmentations"): the
// configuration, the parameters drawn for one sample and view, and the reproducible draw.
// Contract: parameters are drawn on the host from Philox4x32-10 keyed by (seed, epoch, sample
// index, view) only, so the same key gives bit-identical parameters on every backend and any
// thread count; a backend's augment kernel then applies them (no randomness on the device).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "byol/error.h"

namespace byol {

enum class Interpolation : int32_t { bilinear = 0, bicubic = 1 };
const char* interpolation_name(Interpolation i);

// Index of each color op inside AugmentParams::jitter_order.
enum JitterOp : int32_t { kBrightness = 0, kContrast = 1, kSaturation = 2, kHue = 3 };

// Everything one sample's view needs; a plain struct with fixed-size fields because it is
// copied as bytes to the CUDA plugin (see kBackendApiVersion).
// Pipeline applied by every backend, in this order (values in [0, 1] after the resize):
//   1. resized crop of the box (crop_x0, crop_y0, crop_w, crop_h), in source pixels, to the
//      output size: align_corners=False on the box, i.e. output pixel (i, j) samples source
//      (x0 + (j + 0.5) * w / out_w - 0.5, y0 + (i + 0.5) * h / out_h - 0.5); taps outside the
//      box repeat its edge pixels (torchvision crop-then-resize on tensors, antialias off).
//      Bicubic uses a = -0.75. The result is clamped to [0, 1] (bicubic overshoots).
//   2. horizontal flip                 3. color jitter: the four ops in jitter_order, clamp after each
//   4. grayscale (luma 0.2989, 0.5870, 0.1140)   5. Gaussian blur   6. solarize   7. clamp
//   8. (x - mean[c]) / std[c]
// One-channel images skip saturation, hue and grayscale (they are identities on gray).
struct AugmentParams {
  float crop_x0 = 0, crop_y0 = 0, crop_w = 0, crop_h = 0;
  int32_t flip = 0;
  int32_t jitter = 0;          // apply the four color ops below
  float brightness = 0;        // additive delta
  float contrast = 1;          // factor around the per-channel mean of the image
  float saturation = 1;        // factor blending with the luma image
  float hue = 0;               // shift in turns, in [-0.5, 0.5]
  int32_t jitter_order[4] = {kBrightness, kContrast, kSaturation, kHue};
  int32_t grayscale = 0;
  int32_t blur = 0;
  float blur_sigma = 1;
  // Odd tap counts of the separable kernel along height and width (reflect padding).
  int32_t blur_size_h = 1, blur_size_w = 1;
  int32_t solarize = 0;
  float mean[3] = {0, 0, 0};
  float std[3] = {1, 1, 1};
  int32_t interpolation = static_cast<int32_t>(Interpolation::bicubic);
};
static_assert(std::is_trivially_copyable<AugmentParams>::value,
              "AugmentParams crosses the plugin boundary as bytes");

// The distributions the parameters are drawn from. Probabilities are in [0, 1].
struct AugmentConfig {
  int out_h = 224, out_w = 224;
  Interpolation interpolation = Interpolation::bicubic;
  // Random resized crop: area fraction ~ U[scale], aspect ~ exp(U[log ratio]).
  float crop_scale_min = 0.08f, crop_scale_max = 1.0f;
  float crop_ratio_min = 3.0f / 4.0f, crop_ratio_max = 4.0f / 3.0f;
  float flip_p = 0.5f;
  // Color jitter: brightness delta ~ U[-b, b]; contrast and saturation factors
  // ~ U[max(0, 1 - s), 1 + s]; hue shift ~ U[-h, h] with h <= 0.5.
  float jitter_p = 0.8f;
  float brightness = 0.4f, contrast = 0.4f, saturation = 0.2f, hue = 0.1f;
  float grayscale_p = 0.2f;
  // Blur taps per axis: 2 * floor(floor(side * fraction) / 2) + 1 (23 at 224, 3 at 32, as
  // the reference implementation), sigma ~ U[sigma_min, sigma_max].
  float blur_p = 1.0f;
  float blur_sigma_min = 0.1f, blur_sigma_max = 2.0f;
  float blur_kernel_fraction = 0.1f;
  float solarize_p = 0.0f;
  int channels = 3;  // 1 or 3: mean/std entries used
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
};

// Throws byol::Error naming the first field that is out of range.
void validate_augment_config(const AugmentConfig& config);

// Presets. View 1 is T, view 2 is T' of BYOL.md (blur 1.0 / 0.1, solarize 0.0 / 0.2).
AugmentConfig byol_view_config(int view, int out_h = 224, int out_w = 224);
// CIFAR-size practice: T / T' without blur, CIFAR-10 mean/std, 32x32 output.
AugmentConfig cifar_view_config(int view, int out_h = 32, int out_w = 32);
// One-channel data (Fashion-MNIST): no saturation, hue, grayscale or blur; mean/std of
// Fashion-MNIST; 28x28 output.
AugmentConfig grayscale_view_config(int view, int out_h = 28, int out_w = 28);

// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator, so any draw is a pure
// function of (counter, key) and needs no sequential state.
struct Philox4x32 {
  uint32_t v[4];
};
Philox4x32 philox4x32_10(const uint32_t counter[4], const uint32_t key[2]);

// Draws one sample's parameters for one view of an H x W source image.
// Key layout: key = seed (64 bits), counter = (block, view, sample_index, epoch), so
// sample_index, epoch and view must each fit in 32 bits (checked). Crop sampling follows
// torchvision's RandomResizedCrop.get_params: 10 attempts, then a center crop clamped to the
// ratio range; integer boxes with round-half-even like Python's round().
AugmentParams draw_augment_params(const AugmentConfig& config, uint64_t seed, uint64_t epoch,
                                  uint64_t sample_index, int view, int H, int W);
// The same for n samples (params[i] for sample_indices[i]); validates the config once.
void draw_augment_params(AugmentParams* params, const AugmentConfig& config, uint64_t seed,
                         uint64_t epoch, const int64_t* sample_indices, int n, int view, int H,
                         int W);

// Checks one parameter set against an H x W x C source and the output size (box inside the
// image, odd blur taps smaller than twice the side, std > 0, a valid permutation ...).
// Kernels call this for every sample before starting parallel work.
void validate_augment_params(const AugmentParams& p, int index, int H, int W, int C, int out_h,
                             int out_w);

}  // namespace byol
