// test_augment.cc: augmentation cases for the C++ runner: every op of the CPU kernel against
// test/fixtures/augment_v1.bin (tools/ref_augment.py: numpy/PyTorch/colorsys on fixed
// parameters), Philox known answers, draws against the Python re-implementation, draw
// determinism and statistics, kernel properties and input validation; the CUDA kernels' stages
// (core/augment_math.h) run on the host against the CPU kernel, bit for bit; CUDA against CPU
// and the CUDA backend's error messages when a GPU backend is present (skipped visibly if not).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "../core/augment_math.h"
#include "../cpu/augment_cpu.h"
#include "byol/augment.h"
#include "byol/tensor.h"
#include "harness.h"
#include "runner.h"

namespace {

using byol::AugmentConfig;
using byol::AugmentParams;
using byol_test::Context;

constexpr int kParamFields = 27;  // tools/ref_augment.py PARAM_FIELDS

AugmentParams params_from_fields(const float* f) {
  AugmentParams p;
  p.crop_x0 = f[0];
  p.crop_y0 = f[1];
  p.crop_w = f[2];
  p.crop_h = f[3];
  p.flip = static_cast<int32_t>(f[4]);
  p.jitter = static_cast<int32_t>(f[5]);
  p.brightness = f[6];
  p.contrast = f[7];
  p.saturation = f[8];
  p.hue = f[9];
  for (int k = 0; k < 4; ++k) p.jitter_order[k] = static_cast<int32_t>(f[10 + k]);
  p.grayscale = static_cast<int32_t>(f[14]);
  p.blur = static_cast<int32_t>(f[15]);
  p.blur_sigma = f[16];
  p.blur_size_h = static_cast<int32_t>(f[17]);
  p.blur_size_w = static_cast<int32_t>(f[18]);
  p.solarize = static_cast<int32_t>(f[19]);
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = f[20 + c];
    p.std[c] = f[23 + c];
  }
  p.interpolation = static_cast<int32_t>(f[26]);
  return p;
}

std::vector<float> fields_from_params(const AugmentParams& p) {
  std::vector<float> f = {p.crop_x0, p.crop_y0, p.crop_w, p.crop_h, float(p.flip), float(p.jitter),
                          p.brightness, p.contrast, p.saturation, p.hue};
  for (int k = 0; k < 4; ++k) f.push_back(float(p.jitter_order[k]));
  f.insert(f.end(), {float(p.grayscale), float(p.blur), p.blur_sigma, float(p.blur_size_h),
                     float(p.blur_size_w), float(p.solarize)});
  for (int c = 0; c < 3; ++c) f.push_back(p.mean[c]);
  for (int c = 0; c < 3; ++c) f.push_back(p.std[c]);
  f.push_back(float(p.interpolation));
  return f;
}

// ---- fixture file (format documented in tools/ref_augment.py) ----

struct FixtureImage {
  int H, W, C;
  std::vector<uint8_t> pixels;
};
struct OpCase {
  std::string name;
  int image_id, out_h, out_w;
  float atol;
  AugmentParams params;
  std::vector<float> expected;
};
struct DrawCase {
  std::string preset;
  int preset_view, out_h, out_w;
  uint64_t seed, epoch, index;
  int view, H, W;
  std::vector<float> expected;  // kParamFields
};
struct Fixture {
  std::vector<FixtureImage> images;
  std::vector<OpCase> ops;
  std::vector<DrawCase> draws;
};

class Reader {
 public:
  Reader(std::vector<char> bytes, std::string path) : bytes_(std::move(bytes)), path_(std::move(path)) {}
  void read(void* dst, size_t n) {
    BYOL_CHECK(pos_ + n <= bytes_.size(), path_, ": truncated at byte ", pos_, " (needed ", n,
               " more bytes, file has ", bytes_.size(), ")");
    std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
  }
  template <typename T>
  T get() {
    T v;
    read(&v, sizeof(T));
    return v;
  }
  std::string str() {
    uint32_t n = get<uint32_t>();
    BYOL_CHECK(n < 256, path_, ": implausible name length ", n, " at byte ", pos_);
    std::string s(n, '\0');
    read(&s[0], n);
    return s;
  }
  bool done() const { return pos_ == bytes_.size(); }

 private:
  std::vector<char> bytes_;
  std::string path_;
  size_t pos_ = 0;
};

const Fixture& load_fixture(const Context& ctx) {
  static std::map<std::string, Fixture> cache;
  const std::string path = ctx.fixtures_dir + "/augment_v1.bin";
  auto it = cache.find(path);
  if (it != cache.end()) return it->second;
  std::ifstream in(path, std::ios::binary);
  BYOL_CHECK(in.good(), path, ": cannot open (regenerate with tools/ref_augment.py)");
  Reader r(std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), path);
  char magic[8];
  r.read(magic, 8);
  BYOL_CHECK(std::memcmp(magic, "BYOLAUG1", 8) == 0, path, ": expected magic BYOLAUG1");
  Fixture fx;
  uint32_t num_images = r.get<uint32_t>();
  for (uint32_t i = 0; i < num_images; ++i) {
    FixtureImage im;
    im.H = r.get<int32_t>();
    im.W = r.get<int32_t>();
    im.C = r.get<int32_t>();
    im.pixels.resize(static_cast<size_t>(im.H) * im.W * im.C);
    r.read(im.pixels.data(), im.pixels.size());
    fx.images.push_back(std::move(im));
  }
  uint32_t num_ops = r.get<uint32_t>();
  for (uint32_t i = 0; i < num_ops; ++i) {
    OpCase oc;
    oc.name = r.str();
    oc.image_id = r.get<int32_t>();
    oc.out_h = r.get<int32_t>();
    oc.out_w = r.get<int32_t>();
    oc.atol = r.get<float>();
    BYOL_CHECK(oc.image_id >= 0 && oc.image_id < static_cast<int>(fx.images.size()), path,
               ": case ", oc.name, " refers to image ", oc.image_id);
    float f[kParamFields];
    r.read(f, sizeof(f));
    oc.params = params_from_fields(f);
    oc.expected.resize(static_cast<size_t>(oc.out_h) * oc.out_w * fx.images[oc.image_id].C);
    r.read(oc.expected.data(), oc.expected.size() * sizeof(float));
    fx.ops.push_back(std::move(oc));
  }
  uint32_t num_draws = r.get<uint32_t>();
  for (uint32_t i = 0; i < num_draws; ++i) {
    DrawCase dc;
    dc.preset = r.str();
    dc.preset_view = r.get<int32_t>();
    dc.out_h = r.get<int32_t>();
    dc.out_w = r.get<int32_t>();
    dc.seed = r.get<uint64_t>();
    dc.epoch = r.get<uint64_t>();
    dc.index = r.get<uint64_t>();
    dc.view = r.get<int32_t>();
    dc.H = r.get<int32_t>();
    dc.W = r.get<int32_t>();
    dc.expected.resize(kParamFields);
    r.read(dc.expected.data(), kParamFields * sizeof(float));
    fx.draws.push_back(std::move(dc));
  }
  BYOL_CHECK(r.done(), path, ": trailing bytes after the last draw case");
  return cache.emplace(path, std::move(fx)).first->second;
}

AugmentConfig preset_config(const std::string& name, int view, int out_h, int out_w) {
  if (name == "byol") return byol::byol_view_config(view, out_h, out_w);
  if (name == "cifar") return byol::cifar_view_config(view, out_h, out_w);
  if (name == "grayscale") return byol::grayscale_view_config(view, out_h, out_w);
  BYOL_FAIL("unknown preset in fixture: ", name);
}

std::vector<float> run_cpu(const std::vector<uint8_t>& images, const std::vector<AugmentParams>& params,
                           int H, int W, int C, int out_h, int out_w) {
  const int N = static_cast<int>(params.size());
  std::vector<float> out(static_cast<size_t>(N) * out_h * out_w * C);
  byol::cpu::augment(out.data(), images.data(), params.data(), N, H, W, C, out_h, out_w);
  return out;
}

std::vector<uint8_t> random_images(int N, int H, int W, int C, uint32_t seed) {
  std::vector<uint8_t> v(static_cast<size_t>(N) * H * W * C);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    x = static_cast<uint8_t>(s >> 24);
  }
  return v;
}

bool throws_with(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
  } catch (const byol::Error& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return true;
    std::printf("  unexpected message: %s\n", e.what());
    return false;
  }
  std::printf("  no error thrown (expected one mentioning \"%s\")\n", needle.c_str());
  return false;
}

// A scalar expectation (value in [lo, hi]); printed like the harness's check lines: when it
// fails, or always with --verbose.
bool g_verbose = false;
bool check_in_range(const std::string& name, double value, double lo, double hi) {
  bool ok = value >= lo && value <= hi;
  if (ok && !g_verbose) return true;
  std::printf("  %-44s %.6g in [%.6g, %.6g] %s\n", name.c_str(), value, lo, hi, ok ? "ok" : "FAIL");
  return ok;
}

void require(bool ok, const std::string& what) { BYOL_CHECK(ok, what); }

}  // namespace

BYOL_TEST("augment/philox_known_answers", ctx) {
  g_verbose = ctx.verbose;
  // Random123's kat_vectors for philox4x32_10: (counter, key) -> result.
  struct Kat {
    uint32_t ctr[4], key[2], want[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  bool ok = true;
  for (const Kat& k : kats) {
    byol::Philox4x32 r = byol::philox4x32_10(k.ctr, k.key);
    bool same = std::equal(r.v, r.v + 4, k.want);
    if (!same || g_verbose)
      std::printf("  philox(%08x, ...) -> %08x %08x %08x %08x %s\n", k.ctr[0], r.v[0], r.v[1], r.v[2],
                  r.v[3], same ? "ok" : "FAIL");
    ok = ok && same;
  }
  require(ok, "Philox4x32-10 differs from the Random123 known answers");
}

BYOL_TEST("augment/cpu_ops_vs_reference", ctx) {
  g_verbose = ctx.verbose;
  const Fixture& fx = load_fixture(ctx);
  bool ok = true;
  for (const OpCase& oc : fx.ops) {
    const FixtureImage& im = fx.images[oc.image_id];
    std::vector<float> got = run_cpu(im.pixels, {oc.params}, im.H, im.W, im.C, oc.out_h, oc.out_w);
    // atol per case from the generator (float32 kernel vs float64/PyTorch reference).
    ok = byol_test::check(oc.name, got, oc.expected, oc.atol, 0.0f) && ok;
  }
  require(ok, "some augmentation ops differ from the reference");
}

BYOL_TEST("augment/cpu_batch_matches_single", ctx) {
  g_verbose = ctx.verbose;
  // Running all fixture cases of one image in one batch must equal running them one by one
  // (no state leaks between samples or threads).
  const Fixture& fx = load_fixture(ctx);
  const FixtureImage& im = fx.images[fx.ops[2].image_id];
  std::vector<AugmentParams> batch;
  for (const OpCase& oc : fx.ops)
    if (&fx.images[oc.image_id] == &im && oc.out_h == 24 && oc.out_w == 24) batch.push_back(oc.params);
  require(batch.size() >= 3, "fixture has too few 24x24 cases on one image");
  std::vector<uint8_t> images;
  for (size_t i = 0; i < batch.size(); ++i) images.insert(images.end(), im.pixels.begin(), im.pixels.end());
  std::vector<float> together = run_cpu(images, batch, im.H, im.W, im.C, 24, 24);
  std::vector<float> apart;
  for (const AugmentParams& p : batch) {
    std::vector<float> one = run_cpu(im.pixels, {p}, im.H, im.W, im.C, 24, 24);
    apart.insert(apart.end(), one.begin(), one.end());
  }
  require(byol_test::check("batch_vs_single", together, apart, 0.0f, 0.0f), "batch differs");
}

BYOL_TEST("augment/draws_vs_python", ctx) {
  g_verbose = ctx.verbose;
  // Exact: the draw is integer Philox plus double arithmetic that Python repeats operation by
  // operation (same libm), then one rounding to float.
  const Fixture& fx = load_fixture(ctx);
  bool ok = true;
  for (const DrawCase& dc : fx.draws) {
    AugmentConfig c = preset_config(dc.preset, dc.preset_view, dc.out_h, dc.out_w);
    AugmentParams p = byol::draw_augment_params(c, dc.seed, dc.epoch, dc.index, dc.view, dc.H, dc.W);
    char name[160];
    std::snprintf(name, sizeof(name), "draw %s v%d seed=%llu epoch=%llu index=%llu %dx%d",
                  dc.preset.c_str(), dc.view, (unsigned long long)dc.seed,
                  (unsigned long long)dc.epoch, (unsigned long long)dc.index, dc.H, dc.W);
    ok = byol_test::check(name, fields_from_params(p), dc.expected, 0.0f, 0.0f) && ok;
  }
  require(ok, "parameter draws differ from tools/ref_augment.py");
}

BYOL_TEST("augment/draw_determinism", ctx) {
  g_verbose = ctx.verbose;
  AugmentConfig c = byol::byol_view_config(2);
  const int n = 4096;
  std::vector<int64_t> indices(n);
  for (int i = 0; i < n; ++i) indices[i] = 7 * i + 3;
  std::vector<AugmentParams> serial(n), parallel(n), again(n);
  byol::draw_augment_params(serial.data(), c, 11, 5, indices.data(), n, 2, 180, 240);
  byol::draw_augment_params(again.data(), c, 11, 5, indices.data(), n, 2, 180, 240);
  // Any thread count and any order of samples gives the same parameters.
#pragma omp parallel for num_threads(3) schedule(dynamic, 7)
  for (int i = n - 1; i >= 0; --i)
    parallel[i] = byol::draw_augment_params(c, 11, 5, static_cast<uint64_t>(indices[i]), 2, 180, 240);
  bool same_again = std::memcmp(serial.data(), again.data(), n * sizeof(AugmentParams)) == 0;
  bool same_parallel = std::memcmp(serial.data(), parallel.data(), n * sizeof(AugmentParams)) == 0;
  if (!(same_again && same_parallel) || g_verbose)
    std::printf("  repeat identical: %s, 3 threads reversed identical: %s\n", same_again ? "ok" : "FAIL",
              same_parallel ? "ok" : "FAIL");
  // Each key component changes the stream.
  AugmentParams base = byol::draw_augment_params(c, 11, 5, 3, 2, 180, 240);
  auto differs = [&](const AugmentParams& q) { return std::memcmp(&q, &base, sizeof(q)) != 0; };
  bool keyed = differs(byol::draw_augment_params(c, 12, 5, 3, 2, 180, 240)) &&
               differs(byol::draw_augment_params(c, 11 + (1ull << 32), 5, 3, 2, 180, 240)) &&
               differs(byol::draw_augment_params(c, 11, 6, 3, 2, 180, 240)) &&
               differs(byol::draw_augment_params(c, 11, 5, 4, 2, 180, 240)) &&
               differs(byol::draw_augment_params(c, 11, 5, 3, 1, 180, 240));
  if (!keyed || g_verbose)
    std::printf("  seed (both halves), epoch, index and view each change the draw: %s\n", keyed ? "ok" : "FAIL");
  require(same_again && same_parallel && keyed, "draws are not a pure function of their key");
}

BYOL_TEST("augment/draw_statistics", ctx) {
  g_verbose = ctx.verbose;
  // 10k draws per view; each rate within 3 sigma of its probability (the draws are a fixed
  // function of the key, so this is deterministic, not flaky).
  // A square source: on a non-square one the fit test favours crops along the long side,
  // which biases the log-aspect mean away from 0 by design (torchvision does the same).
  const int n = 10000, H = 288, W = 288;
  bool ok = true;
  for (int view = 1; view <= 2; ++view) {
    AugmentConfig c = byol::byol_view_config(view);
    std::vector<int64_t> indices(n);
    for (int i = 0; i < n; ++i) indices[i] = i;
    std::vector<AugmentParams> ps(n);
    byol::draw_augment_params(ps.data(), c, 2020, 1, indices.data(), n, view, H, W);
    double flips = 0, jitters = 0, grays = 0, blurs = 0, solar = 0, bright_sum = 0, log_ratio_sum = 0;
    double top_sum = 0, top_count = 0;
    double min_area = 1e9, max_area = 0, min_ratio = 1e9, max_ratio = 0;
    float min_b = 1, max_b = -1, min_c = 9, max_c = 0, min_s = 9, max_s = 0, min_h = 1, max_h = -1;
    float min_sig = 9, max_sig = 0;
    std::map<int, int> orders;
    for (const AugmentParams& p : ps) {
      flips += p.flip;
      jitters += p.jitter;
      grays += p.grayscale;
      blurs += p.blur;
      solar += p.solarize;
      bright_sum += p.brightness;
      double area = double(p.crop_w) * p.crop_h / (double(H) * W), ratio = double(p.crop_w) / p.crop_h;
      min_area = std::min(min_area, area);
      max_area = std::max(max_area, area);
      min_ratio = std::min(min_ratio, ratio);
      max_ratio = std::max(max_ratio, ratio);
      log_ratio_sum += std::log(ratio);
      if (p.crop_h < H) {
        top_sum += p.crop_y0 / (H - p.crop_h);
        top_count += 1;
      }
      min_b = std::min(min_b, p.brightness);
      max_b = std::max(max_b, p.brightness);
      min_c = std::min(min_c, p.contrast);
      max_c = std::max(max_c, p.contrast);
      min_s = std::min(min_s, p.saturation);
      max_s = std::max(max_s, p.saturation);
      min_h = std::min(min_h, p.hue);
      max_h = std::max(max_h, p.hue);
      min_sig = std::min(min_sig, p.blur_sigma);
      max_sig = std::max(max_sig, p.blur_sigma);
      int key = 0;
      for (int k = 0; k < 4; ++k) key = key * 4 + p.jitter_order[k];
      orders[key]++;
    }
    auto rate_ok = [&](const char* what, double count, double prob) {
      double sigma = std::sqrt(prob * (1 - prob) / n);
      char name[64];
      std::snprintf(name, sizeof(name), "view %d %s rate", view, what);
      return check_in_range(name, count / n, prob - 3 * sigma - 1e-12, prob + 3 * sigma + 1e-12);
    };
    ok = rate_ok("flip", flips, c.flip_p) && ok;
    ok = rate_ok("jitter", jitters, c.jitter_p) && ok;
    ok = rate_ok("grayscale", grays, c.grayscale_p) && ok;
    ok = rate_ok("blur", blurs, c.blur_p) && ok;
    ok = rate_ok("solarize", solar, c.solarize_p) && ok;
    const std::string v = "view " + std::to_string(view) + " ";
    // Rounding w and h to integers moves the area and ratio slightly outside the sampled range:
    // at most half a pixel on each side.
    const double slack_area = (0.5 * (H + W) + 0.25) / (double(H) * W);
    ok = check_in_range(v + "min crop area fraction", min_area, 0.08 - slack_area, 0.09) && ok;
    ok = check_in_range(v + "max crop area fraction", max_area, 0.9, 1.0) && ok;
    ok = check_in_range(v + "min crop aspect", min_ratio, 0.75 * (1 - 0.5 / 50), 0.76) && ok;
    ok = check_in_range(v + "max crop aspect", max_ratio, 1.32, 4.0 / 3.0 * (1 + 0.5 / 50)) && ok;
    // log-aspect ~ U[log 3/4, log 4/3]: mean 0, sd 0.166 (a little truncated by the fit).
    ok = check_in_range(v + "mean log aspect", log_ratio_sum / n, -3 * 0.166 / std::sqrt(n), 3 * 0.166 / std::sqrt(n)) && ok;
    ok = check_in_range(v + "mean relative crop top", top_sum / top_count, 0.5 - 3 * 0.2887 / std::sqrt(top_count),
                        0.5 + 3 * 0.2887 / std::sqrt(top_count)) && ok;
    ok = check_in_range(v + "mean brightness delta", bright_sum / n, -3 * 0.4 / std::sqrt(3.0 * n), 3 * 0.4 / std::sqrt(3.0 * n)) && ok;
    ok = check_in_range(v + "brightness min", min_b, -0.4, -0.399) && check_in_range(v + "brightness max", max_b, 0.399, 0.4) && ok;
    ok = check_in_range(v + "contrast min", min_c, 0.6, 0.601) && check_in_range(v + "contrast max", max_c, 1.399, 1.4) && ok;
    ok = check_in_range(v + "saturation min", min_s, 0.8, 0.801) && check_in_range(v + "saturation max", max_s, 1.199, 1.2) && ok;
    ok = check_in_range(v + "hue min", min_h, -0.1, -0.0995) && check_in_range(v + "hue max", max_h, 0.0995, 0.1) && ok;
    ok = check_in_range(v + "sigma min", min_sig, 0.1, 0.102) && check_in_range(v + "sigma max", max_sig, 1.998, 2.0) && ok;
    // All 24 jitter orders, uniformly: chi-square with 23 dof below its 0.1% point (49.73).
    double chi2 = 0, expect = n / 24.0;
    for (auto& kv : orders) chi2 += (kv.second - expect) * (kv.second - expect) / expect;
    ok = check_in_range(v + "jitter orders seen", double(orders.size()), 24, 24) && ok;
    ok = check_in_range(v + "jitter order chi-square (23 dof)", chi2, 0, 49.73) && ok;
  }
  require(ok, "draw statistics outside their expected ranges");
}

BYOL_TEST("augment/crop_fallback_and_tiny_images", ctx) {
  g_verbose = ctx.verbose;
  AugmentConfig c = byol::byol_view_config(1, 32, 32);
  bool ok = true;
  // 1 x 400: no box with aspect in [3/4, 4/3] fits, so the center fallback must give a valid box.
  for (int i = 0; i < 200; ++i) {
    for (auto hw : {std::pair<int, int>{1, 400}, {400, 1}, {1, 1}, {2, 3}, {3, 2}}) {
      AugmentParams p = byol::draw_augment_params(c, 1, 0, i, 1, hw.first, hw.second);
      byol::validate_augment_params(p, i, hw.first, hw.second, 3, 32, 32);
      ok = ok && p.crop_w >= 1 && p.crop_h >= 1;
    }
  }
  AugmentParams wide = byol::draw_augment_params(c, 1, 0, 0, 1, 1, 400);
  // in_ratio 400 > 4/3: h = 1, w = round(4/3) = 1, centered.
  ok = check_in_range("fallback wide w", wide.crop_w, 1, 1) && check_in_range("fallback wide x0", wide.crop_x0, 199, 199) && ok;
  require(ok, "fallback crops invalid");
}

BYOL_TEST("augment/cpu_properties", ctx) {
  g_verbose = ctx.verbose;
  bool ok = true;
  // Coordinate convention: bilinear reproduces a linear ramp exactly, so with a fractional box
  // output column j must read x0 + (j + 0.5) * w / out_w - 0.5 (away from the clamped edges).
  {
    const int H = 4, W = 200, out_w = 16;
    std::vector<uint8_t> ramp(H * W);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) ramp[y * W + x] = static_cast<uint8_t>(x);
    AugmentParams p;
    p.crop_x0 = 20.25f;
    p.crop_y0 = 0;
    p.crop_w = 100.5f;
    p.crop_h = H;
    p.interpolation = static_cast<int32_t>(byol::Interpolation::bilinear);
    std::vector<float> got = run_cpu(ramp, {p}, H, W, 1, 1, out_w), want(out_w);
    for (int j = 0; j < out_w; ++j) want[j] = (p.crop_x0 + (j + 0.5f) * p.crop_w / out_w - 0.5f) / 255.0f;
    ok = byol_test::check("bilinear ramp, fractional box", got, want, 2e-6f, 0) && ok;
  }
  // Flip equals reversing the columns of the unflipped result.
  {
    std::vector<uint8_t> img = random_images(1, 37, 41, 3, 5);
    AugmentParams p;
    p.crop_x0 = 3;
    p.crop_y0 = 4;
    p.crop_w = 30;
    p.crop_h = 25;
    AugmentParams q = p;
    q.flip = 1;
    std::vector<float> a = run_cpu(img, {p}, 37, 41, 3, 13, 17), b = run_cpu(img, {q}, 37, 41, 3, 13, 17);
    std::vector<float> reversed(a.size());
    for (int y = 0; y < 13; ++y)
      for (int x = 0; x < 17; ++x)
        for (int c = 0; c < 3; ++c) reversed[(y * 17 + x) * 3 + c] = a[(y * 17 + (16 - x)) * 3 + c];
    ok = byol_test::check("flip == reversed columns", b, reversed, 0, 0) && ok;
  }
  // A constant image stays constant through resize, contrast, saturation, hue and blur.
  {
    std::vector<uint8_t> img(20 * 30 * 3);
    for (size_t i = 0; i < img.size(); ++i) img[i] = i % 3 == 0 ? 200 : (i % 3 == 1 ? 90 : 30);
    AugmentParams p;
    p.crop_x0 = 2;
    p.crop_y0 = 1;
    p.crop_w = 17;
    p.crop_h = 13;
    p.jitter = 1;
    p.contrast = 1.4f;
    p.saturation = 1.0f;
    p.blur = 1;
    p.blur_sigma = 2;
    p.blur_size_h = p.blur_size_w = 9;
    std::vector<float> got = run_cpu(img, {p}, 20, 30, 3, 11, 12), want(got.size());
    for (size_t i = 0; i < want.size(); ++i) want[i] = (i % 3 == 0 ? 200 : (i % 3 == 1 ? 90 : 30)) / 255.0f;
    ok = byol_test::check("constant image preserved", got, want, 2e-6f, 0) && ok;
  }
  // The result does not depend on the number of threads.
  {
    const int N = 13, H = 50, W = 60;
    std::vector<uint8_t> imgs = random_images(N, H, W, 3, 9);
    std::vector<int64_t> idx(N);
    for (int i = 0; i < N; ++i) idx[i] = i;
    std::vector<AugmentParams> ps(N);
    byol::draw_augment_params(ps.data(), byol::byol_view_config(2, 40, 40), 3, 0, idx.data(), N, 2, H, W);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    std::vector<float> one = run_cpu(imgs, ps, H, W, 3, 40, 40);
    omp_set_num_threads(std::max(2, threads));
    std::vector<float> many = run_cpu(imgs, ps, H, W, 3, 40, 40);
    omp_set_num_threads(threads);
    ok = byol_test::check("1 thread == many threads", many, one, 0, 0) && ok;
  }
  require(ok, "kernel properties violated");
}

BYOL_TEST("augment/validation_errors", ctx) {
  g_verbose = ctx.verbose;
  std::vector<uint8_t> img(8 * 8 * 3, 7);
  std::vector<float> out(8 * 8 * 3);
  AugmentParams good;
  good.crop_w = 8;
  good.crop_h = 8;
  auto run = [&](AugmentParams p, int C = 3) {
    return [=, &img, &out] { byol::cpu::augment(out.data(), img.data(), &p, 1, 8, 8, C, 4, 4); };
  };
  AugmentParams outside = good;
  outside.crop_x0 = 2;
  AugmentParams order = good;
  order.jitter = 1;
  order.jitter_order[2] = 1;
  AugmentParams even = good;
  even.blur = 1;
  even.blur_size_h = 2;
  AugmentParams wide = good;
  wide.blur = 1;
  wide.blur_size_w = 9;  // radius 4 >= output side 4: reflect padding impossible
  AugmentParams zero_std = good;
  zero_std.std[1] = 0;
  AugmentParams interp = good;
  interp.interpolation = 7;
  AugmentConfig bad_p = byol::byol_view_config(1);
  bad_p.flip_p = 1.5f;
  AugmentConfig bad_ratio = byol::byol_view_config(1);
  bad_ratio.crop_ratio_min = 2.0f;
  bool ok = throws_with(run(outside), "crop box inside the 8x8 image") &&
            throws_with(run(order), "permutation of 0..3") &&
            throws_with(run(even), "odd blur sizes") && throws_with(run(wide), "odd blur sizes") &&
            throws_with(run(zero_std), "std > 0 for channel 1") &&
            throws_with(run(interp), "interpolation") && throws_with(run(good, 2), "1 or 3 channels") &&
            throws_with([&] { byol::draw_augment_params(bad_p, 0, 0, 0, 1, 8, 8); }, "flip probability") &&
            throws_with([&] { byol::draw_augment_params(bad_ratio, 0, 0, 0, 1, 8, 8); }, "crop ratio") &&
            throws_with([&] { byol::draw_augment_params(byol::byol_view_config(1), 0, 1ull << 32, 0, 1, 8, 8); },
                        "epoch < 2^32") &&
            throws_with([&] { byol::byol_view_config(3); }, "view 1 or 2");
  if (!ok || g_verbose) std::printf("  every bad input throws byol::Error naming it: %s\n", ok ? "ok" : "FAIL");
  require(ok, "validation messages");
}

BYOL_TEST("augment/backend_vs_cpu_kernel", ctx) {
  g_verbose = ctx.verbose;
  // Each available backend's `augment` must equal the CPU kernel on the same parameters.
  // Unwired backends report "not supported" (skip), not failure.
  const int N = 6, H = 72, W = 90, C = 3, out_h = 48, out_w = 40;
  std::vector<uint8_t> imgs = random_images(N, H, W, C, 21);
  std::vector<int64_t> idx = {0, 5, 9, 14, 22, 31};
  std::vector<AugmentParams> ps(N);
  AugmentConfig cfg = byol::byol_view_config(2, out_h, out_w);
  cfg.solarize_p = 0.5f;  // exercise every op in a handful of samples
  cfg.blur_p = 0.5f;
  byol::draw_augment_params(ps.data(), cfg, 77, 3, idx.data(), N, 2, H, W);
  std::vector<float> want = run_cpu(imgs, ps, H, W, C, out_h, out_w);
  int ran = 0;
  std::string skipped;
  for (byol::Backend* backend : {ctx.cpu, ctx.cuda, ctx.emu}) {
    if (!backend) continue;
    const char* name = byol::device_name(backend->type());
    try {
      byol::Tensor in = byol::Tensor::from_host(backend, imgs.data(), {N, H, W, C}, byol::DType::u8);
      byol::Tensor out(backend, {N, out_h, out_w, C}, byol::DType::f32);
      backend->augment(out.f32(), in.u8(), ps.data(), N, H, W, C, out_h, out_w);
      backend->synchronize();
      // CUDA may contract multiply-adds differently: 1e-5 in normalized units (~2e-6 before
      // the division by std) while any wrong tap or op moves values by >1e-3.
      float atol = backend->type() == byol::DeviceType::cpu ? 0.0f : 1e-5f;
      require(byol_test::check(std::string(name) + " backend augment", out.to_vector_f32(), want, atol, 0),
              std::string(name) + " augment differs from the CPU kernel");
      ++ran;
    } catch (const byol::NotSupported& e) {
      skipped += std::string(skipped.empty() ? "" : "; ") + e.what();
    }
  }
  if (ran == 0) byol_test::skip("no backend implements augment yet: " + skipped);
  if (!skipped.empty()) std::printf("  not supported: %s\n", skipped.c_str());
}

// ---- the CUDA kernels' arithmetic (core/augment_math.h) and the CUDA backend ------------------

namespace {

namespace am = byol::augment_math;

// One batch for the backend comparisons: every op, both interpolations (alternating per sample),
// fractional boxes, flips, jitter on and off, the widest blur the output allows.
struct CoverageBatch {
  std::string name;
  int H, W, C, out_h, out_w;
  std::vector<uint8_t> images;
  std::vector<AugmentParams> params;
};

CoverageBatch coverage_batch(const std::string& name, int N, int H, int W, int C, int out_h, int out_w, uint32_t seed) {
  CoverageBatch b{name, H, W, C, out_h, out_w, random_images(N, H, W, C, seed), std::vector<AugmentParams>(N)};
  AugmentConfig cfg = C == 3 ? byol::byol_view_config(2, out_h, out_w) : byol::grayscale_view_config(2, out_h, out_w);
  cfg.jitter_p = 0.75f;
  cfg.grayscale_p = 0.5f;
  cfg.blur_p = 0.6f;
  cfg.blur_kernel_fraction = 0.3f;
  cfg.solarize_p = 0.5f;
  std::vector<int64_t> idx(N);
  for (int i = 0; i < N; ++i) idx[i] = 3 * i + seed;
  byol::draw_augment_params(b.params.data(), cfg, 1000 + seed, 4, idx.data(), N, 2, H, W);
  for (int i = 0; i < N; ++i) {
    AugmentParams& p = b.params[i];
    p.interpolation = static_cast<int32_t>(i % 2 ? byol::Interpolation::bilinear : byol::Interpolation::bicubic);
    if (i % 3 == 0 && p.crop_w > 1) {  // fractional box, still inside the image
      p.crop_x0 += 0.3f;
      p.crop_w -= 0.6f;
    }
    if (i % 4 == 1) {  // reflect padding across the whole output
      p.blur = 1;
      p.blur_size_h = 2 * out_h - 1;
      p.blur_size_w = 2 * out_w - 1;
    }
    if (i % 5 == 2) p.flip = 1;
    if (i % 7 == 3) {  // contrast first, then last
      p.jitter = 1;
      const int32_t first[4] = {byol::kContrast, byol::kHue, byol::kBrightness, byol::kSaturation};
      std::copy(first, first + 4, p.jitter_order);
    } else if (i % 7 == 4) {
      p.jitter = 1;
      const int32_t last[4] = {byol::kSaturation, byol::kBrightness, byol::kHue, byol::kContrast};
      std::copy(last, last + 4, p.jitter_order);
    }
  }
  return b;
}

std::vector<CoverageBatch> coverage_batches() {
  return {coverage_batch("rgb 72x90 -> 48x40 (down)", 16, 72, 90, 3, 48, 40, 1),
          coverage_batch("rgb 20x17 -> 64x56 (up)", 12, 20, 17, 3, 64, 56, 2),
          coverage_batch("gray 50x60 -> 28x28 (down)", 16, 50, 60, 1, 28, 28, 3),
          coverage_batch("gray 9x13 -> 31x23 (up)", 12, 9, 13, 1, 31, 23, 4)};
}

// The CUDA kernels' decomposition (kernels/augment.cu), run on the host: each stage over the
// whole sample before the next, contrast's means from sequential double sums (the device sums
// in a fixed tree instead), blur taps laid out as the backend uploads them.
std::vector<float> run_stages_on_host(const CoverageBatch& b) {
  const int N = static_cast<int>(b.params.size()), C = b.C;
  const int64_t pixels = int64_t(b.out_h) * b.out_w, per_sample = pixels * C;
  std::vector<float> out(size_t(N) * per_sample), rows(per_sample);
  float to_unit[256];
  for (int v = 0; v < 256; ++v) to_unit[v] = am::unit_value(v);
  for (int n = 0; n < N; ++n) {
    const AugmentParams& p = b.params[n];
    float* img = out.data() + n * per_sample;
    const uint8_t* src = b.images.data() + size_t(n) * b.H * b.W * C;
    for (int y = 0; y < b.out_h; ++y)
      for (int x = 0; x < b.out_w; ++x) am::crop_stage(img, src, p, y, x, b.H, b.W, C, b.out_h, b.out_w, to_unit);
    float means[3] = {0, 0, 0};
    if (p.jitter) {
      double sum[3] = {0, 0, 0};
      for (int64_t i = 0; i < pixels; ++i)
        for (int c = 0; c < C; ++c) sum[c] += img[i * C + c];
      for (int c = 0; c < C; ++c) means[c] = am::contrast_mean(sum[c], pixels);
    }
    for (int64_t i = 0; i < pixels; ++i) am::color_stage(img + i * C, p, C, means);
    if (!p.blur) continue;
    std::vector<float> taps(p.blur_size_h + p.blur_size_w);
    am::gaussian_taps(taps.data(), p.blur_size_h, p.blur_sigma);
    am::gaussian_taps(taps.data() + p.blur_size_h, p.blur_size_w, p.blur_sigma);
    for (int y = 0; y < b.out_h; ++y)
      for (int x = 0; x < b.out_w; ++x)
        for (int c = 0; c < C; ++c)
          rows[(int64_t(y) * b.out_w + x) * C + c] =
              am::blur_rows_stage(img, taps.data() + p.blur_size_h, p.blur_size_w, y, x, c, b.out_w, C);
    for (int y = 0; y < b.out_h; ++y)
      for (int x = 0; x < b.out_w; ++x)
        for (int c = 0; c < C; ++c)
          img[(int64_t(y) * b.out_w + x) * C + c] =
              am::blur_columns_stage(rows.data(), taps.data(), p, y, x, c, b.out_h, b.out_w, C);
  }
  return out;
}

std::vector<float> run_cpu(const CoverageBatch& b) {
  return run_cpu(b.images, b.params, b.H, b.W, b.C, b.out_h, b.out_w);
}

// Every op of the batch appears at least once (a coverage batch that lost one would weaken the
// comparisons silently).
void require_every_op(const CoverageBatch& b) {
  bool jitter = false, no_jitter = false, gray = false, blur = false, solarize = false, flip = false;
  bool bilinear = false, bicubic = false, fractional = false;
  for (const AugmentParams& p : b.params) {
    (p.jitter ? jitter : no_jitter) = true;
    gray = gray || p.grayscale;
    blur = blur || p.blur;
    solarize = solarize || p.solarize;
    flip = flip || p.flip;
    (p.interpolation == static_cast<int32_t>(byol::Interpolation::bilinear) ? bilinear : bicubic) = true;
    fractional = fractional || p.crop_x0 != std::floor(p.crop_x0);
  }
  require(jitter && no_jitter && (gray || b.C == 1) && blur && solarize && flip && bilinear && bicubic && fractional,
          b.name + ": the coverage batch misses an op");
}

std::vector<float> sample_slice(const std::vector<float>& v, const CoverageBatch& b, int n) {
  const size_t per_sample = size_t(b.out_h) * b.out_w * b.C;
  return std::vector<float>(v.begin() + n * per_sample, v.begin() + (n + 1) * per_sample);
}

}  // namespace

BYOL_TEST("augment/stage_functions_vs_cpu_kernel", ctx) {
  g_verbose = ctx.verbose;
  // The CUDA kernels' stages, run on the host, must give the CPU kernel's bits: the shared
  // per-pixel arithmetic and the split of the pipeline into stages are both exact.
  bool ok = true;
  for (const CoverageBatch& b : coverage_batches()) {
    require_every_op(b);
    ok = byol_test::check(b.name + ": stages on the host == CPU kernel", run_stages_on_host(b), run_cpu(b), 0, 0) && ok;
  }
  require(ok, "the CUDA kernels' stages differ from the CPU kernel");
}

// CUDA against the CPU kernel. Every float operation of both is the same single rounding, so a
// sample without color jitter must match bit for bit. With jitter, contrast's channel means are
// double sums in another order; float(mean) can then differ by one ulp (rarely), which moves an
// output by at most ~1e-7 before normalization, 1e-6 after the division by std (>= 0.2) and
// later ops: 1e-5 bounds it, while a wrong tap, op or order moves values by > 1e-3.
static void cuda_vs_cpu(byol_test::Context& ctx, byol::Backend* cuda) {
  g_verbose = ctx.verbose;
  for (const CoverageBatch& b : coverage_batches()) {
    const int N = static_cast<int>(b.params.size());
    const std::vector<float> want = run_cpu(b);
    byol::Tensor in = byol::Tensor::from_host(cuda, b.images.data(), {N, b.H, b.W, b.C}, byol::DType::u8);
    auto run = [&](const std::vector<AugmentParams>& params) {
      byol::Tensor out(cuda, {N, b.out_h, b.out_w, b.C}, byol::DType::f32);
      std::vector<AugmentParams> host = params;
      cuda->augment(out.f32(), in.u8(), host.data(), N, b.H, b.W, b.C, b.out_h, b.out_w);
      // The caller may reuse its array once augment() returns: the upload must not read it.
      std::memset(static_cast<void*>(host.data()), 0xff, host.size() * sizeof(AugmentParams));
      return out;
    };
    byol::Tensor first = run(b.params);
    const std::vector<float> got = first.to_vector_f32();
    for (int n = 0; n < N; ++n) {
      const AugmentParams& p = b.params[n];
      const std::string name = b.name + " sample " + std::to_string(n) + (p.jitter ? " (jitter)" : " (no jitter)");
      byol_test::check(name, sample_slice(got, b, n), sample_slice(want, b, n), p.jitter ? 1e-5f : 0.0f, 0);
    }
    // Fixed-order reductions: a second run gives the same bits.
    byol_test::check(b.name + ": second run, same bits", run(b.params).to_vector_f32(), got, 0, 0);
  }

  // More calls in flight than the staging ring has slots, each on other parameters, then one
  // synchronization: no call may see another's parameters.
  const CoverageBatch b = coverage_batches()[0];
  const int N = static_cast<int>(b.params.size()), calls = 12;
  byol::Tensor in = byol::Tensor::from_host(cuda, b.images.data(), {N, b.H, b.W, b.C}, byol::DType::u8);
  std::vector<std::vector<AugmentParams>> sets;
  std::vector<byol::Tensor> outs;
  std::vector<AugmentParams> host(N);
  for (int k = 0; k < calls; ++k) {
    sets.push_back(b.params);
    std::rotate(sets.back().begin(), sets.back().begin() + (k % N), sets.back().end());
    outs.emplace_back(cuda, std::vector<int64_t>{N, b.out_h, b.out_w, b.C}, byol::DType::f32);
    host = sets.back();
    cuda->augment(outs.back().f32(), in.u8(), host.data(), N, b.H, b.W, b.C, b.out_h, b.out_w);
    std::fill(host.begin(), host.end(), AugmentParams{});
  }
  cuda->synchronize();
  for (int k = 0; k < calls; ++k)
    byol_test::check("queued call " + std::to_string(k) + " of " + std::to_string(calls),
                     outs[k].to_vector_f32(), run_cpu(b.images, sets[k], b.H, b.W, b.C, b.out_h, b.out_w), 1e-5f, 0);
}

BYOL_TEST("augment/cuda_vs_cpu@cuda", ctx) {
  if (!ctx.cuda) byol_test::skip("no CUDA backend on this machine");
  cuda_vs_cpu(ctx, ctx.cuda);
}

// The kernels under the emulator (cuda_emu/): their indexing, the channel-mean reduction and the
// argument block on any machine (the per-pixel arithmetic is the CPU's here, so this checks the
// kernels' structure, not nvcc's rounding).
BYOL_TEST("augment/cuda_vs_cpu@emu", ctx) { cuda_vs_cpu(ctx, ctx.emu); }

// The CUDA backend runs the CPU's checks: the same message with the "cuda: " prefix.
BYOL_TEST("augment/cuda_errors@cuda", ctx) {
  byol::Backend* cuda = ctx.cuda;
  if (!cuda) byol_test::skip("no CUDA backend on this machine");
  std::vector<uint8_t> img(8 * 8 * 3, 7);
  std::vector<float> host_out(8 * 8 * 3);
  byol::Tensor device_img = byol::Tensor::from_host(cuda, img.data(), {1, 8, 8, 3}, byol::DType::u8);
  byol::Tensor device_out(cuda, {1, 4, 4, 3}, byol::DType::f32);
  AugmentParams good;
  good.crop_w = 8;
  good.crop_h = 8;
  struct Case {
    std::string what;
    AugmentParams params;
    int N, C, out_h;
  };
  AugmentParams outside = good;
  outside.crop_x0 = 2;
  AugmentParams zero_std = good;
  zero_std.std[2] = 0;
  AugmentParams even = good;
  even.blur = 1;
  even.blur_size_w = 4;
  const Case cases[] = {{"N < 0", good, -1, 3, 4},          {"2 channels", good, 1, 2, 4},
                        {"output height 0", good, 1, 3, 0}, {"box outside the image", outside, 1, 3, 4},
                        {"std 0", zero_std, 1, 3, 4},       {"even blur size", even, 1, 3, 4}};
  for (const Case& c : cases) {
    const std::string cpu_message = byol_test::error_message([&] {
      ctx.cpu->augment(host_out.data(), img.data(), &c.params, c.N, 8, 8, c.C, c.out_h, 4);
    });
    const std::string cuda_message = byol_test::error_message([&] {
      cuda->augment(device_out.f32(), device_img.u8(), &c.params, c.N, 8, 8, c.C, c.out_h, 4);
    });
    byol_test::expect_true(cpu_message != "(no error)" && cuda_message == "cuda: " + cpu_message, c.what,
                           "cpu: '" + cpu_message + "', cuda: '" + cuda_message + "'");
  }
  // N = 0 is no work and needs no buffers.
  byol_test::expect_true(byol_test::error_message([&] { cuda->augment(nullptr, nullptr, nullptr, 0, 8, 8, 3, 4, 4); }) == "(no error)",
                         "N = 0 with null buffers");
}
