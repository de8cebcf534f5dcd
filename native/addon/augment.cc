// augment.cc (addon): the augmentation bindings.
//   augment(images, shape, config, seed, epoch, indices, view, device) -> Promise<NativeTensor>
//   drawAugmentParams(config, seed, epoch, indices, view, height, width) -> object[]
// Contract: images is a uint8 NativeTensor (core shape [N, H, W, C], shape then null) or a
// Uint8Array of NHWC pixels with shape [N, H, W, C]; the result is a float32 tensor on `device`
// with core shape [N, out_h, out_w, C], normalized. Arguments are checked here (lib/augment.ts
// checks them first, with the same messages); parameter draws and the kernel run in an
// AsyncWorker, never on the main thread.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <sstream>
#include <vector>

#include "../cpu/augment_cpu.h"
#include "addon.h"
#include "byol/augment.h"

namespace byol_addon {


namespace {


double GetNumber(Napi::Env env, const Napi::Object& obj, const char* key, double lo, double hi) {
  Napi::Value v = obj.Get(key);
  std::string name = std::string("config.") + key;
  if (!v.IsNumber()) ThrowExpected(env, name, "number", v);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < lo || d > hi) {
    std::ostringstream expected;
    expected << "number between " << lo << " and " << hi;
    ThrowExpected(env, name, expected.str(), v);
  }
  return d;
}

std::vector<double> GetNumbers(Napi::Env env, const Napi::Object& obj, const char* key, uint32_t min_len,
                               uint32_t max_len) {
  Napi::Value v = obj.Get(key);
  std::string name = std::string("config.") + key;
  std::ostringstream expected;
  expected << "array of " << min_len << (min_len == max_len ? "" : " to " + std::to_string(max_len))
           << " finite numbers";
  if (!v.IsArray()) ThrowExpected(env, name, expected.str(), v);
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() < min_len || a.Length() > max_len) ThrowExpected(env, name, expected.str(), v);
  std::vector<double> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber() || !std::isfinite(e.As<Napi::Number>().DoubleValue()))
      ThrowExpected(env, name + "[" + std::to_string(i) + "]", "finite number", e);
    out.push_back(e.As<Napi::Number>().DoubleValue());
  }
  return out;
}

// The resolved config object lib/augment.ts builds (every key present). `channels` comes from
// the images; mean/std must have one entry per channel.
byol::AugmentConfig ParseConfig(Napi::Env env, const Napi::Value& value, int channels) {
  if (!value.IsObject() || value.IsArray()) ThrowExpected(env, "config", "object", value);
  Napi::Object o = value.As<Napi::Object>();
  byol::AugmentConfig c;
  std::vector<double> size = GetNumbers(env, o, "outputSize", 2, 2);
  for (double s : size)
    if (s != std::floor(s) || s < 1 || s > 16384)
      ThrowExpected(env, "config.outputSize", "[height, width] of integers between 1 and 16384", o.Get("outputSize"));
  c.out_h = static_cast<int>(size[0]);
  c.out_w = static_cast<int>(size[1]);
  Napi::Value interp = o.Get("interpolation");
  std::string interp_name = interp.IsString() ? interp.As<Napi::String>().Utf8Value() : "";
  if (interp_name == "bilinear") c.interpolation = byol::Interpolation::bilinear;
  else if (interp_name == "bicubic") c.interpolation = byol::Interpolation::bicubic;
  else ThrowExpected(env, "config.interpolation", "one of 'bilinear', 'bicubic'", interp);
  std::vector<double> scale = GetNumbers(env, o, "cropScale", 2, 2);
  std::vector<double> ratio = GetNumbers(env, o, "cropRatio", 2, 2);
  std::vector<double> sigma = GetNumbers(env, o, "blurSigma", 2, 2);
  c.crop_scale_min = static_cast<float>(scale[0]);
  c.crop_scale_max = static_cast<float>(scale[1]);
  c.crop_ratio_min = static_cast<float>(ratio[0]);
  c.crop_ratio_max = static_cast<float>(ratio[1]);
  c.flip_p = static_cast<float>(GetNumber(env, o, "flipP", 0, 1));
  c.jitter_p = static_cast<float>(GetNumber(env, o, "jitterP", 0, 1));
  c.brightness = static_cast<float>(GetNumber(env, o, "brightness", 0, 1));
  c.contrast = static_cast<float>(GetNumber(env, o, "contrast", 0, 10));
  c.saturation = static_cast<float>(GetNumber(env, o, "saturation", 0, 10));
  c.hue = static_cast<float>(GetNumber(env, o, "hue", 0, 0.5));
  c.grayscale_p = static_cast<float>(GetNumber(env, o, "grayscaleP", 0, 1));
  c.blur_p = static_cast<float>(GetNumber(env, o, "blurP", 0, 1));
  c.blur_sigma_min = static_cast<float>(sigma[0]);
  c.blur_sigma_max = static_cast<float>(sigma[1]);
  c.blur_kernel_fraction = static_cast<float>(GetNumber(env, o, "blurKernelFraction", 0, 1));
  c.solarize_p = static_cast<float>(GetNumber(env, o, "solarizeP", 0, 1));
  c.channels = channels;
  std::vector<double> mean = GetNumbers(env, o, "mean", 1, 3), stdev = GetNumbers(env, o, "std", 1, 3);
  if (static_cast<int>(mean.size()) != channels || static_cast<int>(stdev.size()) != channels) {
    throw Napi::TypeError::New(env, "Expected config.mean and config.std with " + std::to_string(channels) +
                                        " entries (one per image channel) but received " +
                                        std::to_string(mean.size()) + " and " + std::to_string(stdev.size()));
  }
  for (int ch = 0; ch < channels; ++ch) {
    c.mean[ch] = static_cast<float>(mean[ch]);
    c.std[ch] = static_cast<float>(stdev[ch]);
  }
  try {
    byol::validate_augment_config(c);
  } catch (const byol::Error& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  return c;
}

uint64_t ParseSeed(Napi::Env env, const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t s = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowExpected(env, "seed", "integer between 0 and 2^64 - 1", v);
    return s;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d <= 9007199254740991.0 && d == std::floor(d)) return static_cast<uint64_t>(d);
  }
  ThrowExpected(env, "seed", "integer between 0 and 2^53 - 1 (or a bigint below 2^64)", v);
}

uint32_t ParseU32(Napi::Env env, const Napi::Value& v, const char* name) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d <= 4294967295.0 && d == std::floor(d)) return static_cast<uint32_t>(d);
  }
  ThrowExpected(env, name, "integer between 0 and 4294967295", v);
}

std::vector<int64_t> ParseIndices(Napi::Env env, const Napi::Value& v, size_t expected_n) {
  std::vector<int64_t> out;
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    for (size_t i = 0; i < a.ElementLength(); ++i) {
      if (a[i] < 0) ThrowExpected(env, "indices[" + std::to_string(i) + "]", "integer >= 0", Napi::Number::New(env, a[i]));
      out.push_back(a[i]);
    }
  } else if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint32_array) {
    Napi::Uint32Array a = v.As<Napi::Uint32Array>();
    for (size_t i = 0; i < a.ElementLength(); ++i) out.push_back(a[i]);
  } else if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(ParseU32(env, a.Get(i), ("indices[" + std::to_string(i) + "]").c_str()));
  } else {
    ThrowExpected(env, "indices", "Int32Array, Uint32Array or array of integers", v);
  }
  if (out.size() != expected_n) {
    throw Napi::RangeError::New(env, "Expected " + std::to_string(expected_n) +
                                         " indices (one per image) but received " + std::to_string(out.size()));
  }
  return out;
}

int ParseView(Napi::Env env, const Napi::Value& v) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d <= 65535 && d == std::floor(d)) return static_cast<int>(d);
  }
  ThrowExpected(env, "view", "integer between 0 and 65535", v);
}

std::vector<int64_t> ParseImageShape(Napi::Env env, const Napi::Value& v) {
  const char* expected = "[N, H, W, C] with N >= 0, H, W >= 1 and C 1 or 3";
  if (!v.IsArray() || v.As<Napi::Array>().Length() != 4) ThrowExpected(env, "shape", expected, v);
  std::vector<int64_t> shape;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < 4; ++i) {
    Napi::Value e = a.Get(i);
    double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
    if (d != std::floor(d) || d < (i == 0 ? 0 : 1) || d > 2147483647.0) ThrowExpected(env, "shape", expected, v);
    shape.push_back(static_cast<int64_t>(d));
  }
  if (shape[3] != 1 && shape[3] != 3) ThrowExpected(env, "shape", expected, v);
  return shape;
}

class AugmentWorker : public Napi::AsyncWorker {
 public:
  AugmentWorker(Napi::Env env, byol::Backend* backend, byol::Tensor images, std::vector<uint8_t> host,
                std::vector<int64_t> shape, byol::AugmentConfig config, uint64_t seed, uint32_t epoch,
                std::vector<int64_t> indices, int view)
      : Napi::AsyncWorker(env, "byol:augment"),
        deferred_(Napi::Promise::Deferred::New(env)),
        backend_(backend),
        images_(std::move(images)),
        host_(std::move(host)),
        shape_(std::move(shape)),
        config_(config),
        seed_(seed),
        epoch_(epoch),
        indices_(std::move(indices)),
        view_(view) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      RunWhereDeviceComputes(backend_, [&] { MakeViews(); });
    } catch (const std::bad_alloc&) {
      SetError("out of memory allocating the augmented batch");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(WrapTensor(env, std::move(out_)));
    } catch (const std::exception& e) {
      deferred_.Reject(Napi::Error::New(env, std::string("augment failed: ") + e.what()).Value());
    }
  }

  void OnError(const Napi::Error& error) override {
    deferred_.Reject(Napi::Error::New(Env(), "augment failed: " + error.Message()).Value());
  }

 private:
  // Draws the parameters and makes the views (on the compute thread for the CPU backend).
  void MakeViews() {
    // One "augment" range per view batch (drawing, upload, kernel), for nsys timelines.
    const byol::Range range(backend_, "augment");
    const int N = static_cast<int>(shape_[0]), H = static_cast<int>(shape_[1]),
              W = static_cast<int>(shape_[2]), C = static_cast<int>(shape_[3]);
    std::vector<byol::AugmentParams> params(N);
    byol::draw_augment_params(params.data(), config_, seed_, epoch_, indices_.data(), N, view_, H, W);
    out_ = byol::Tensor(backend_, {N, config_.out_h, config_.out_w, C}, byol::DType::f32);
    if (N == 0) return;
    if (backend_->type() == byol::DeviceType::cpu) {
      // Host pixels straight from the tensor or the copied array: no staging.
      const uint8_t* pixels = host_.data();
      byol::Tensor on_cpu;
      if (images_.defined()) {
        on_cpu = images_.to(backend_);
        pixels = on_cpu.u8();
      }
      // The CPU backend's `augment` virtual delegates to this same kernel.
      byol::cpu::augment(out_.f32(), pixels, params.data(), N, H, W, C, config_.out_h, config_.out_w);
    } else {
      byol::Tensor on_device = images_.defined()
                                   ? images_.to(backend_)
                                   : byol::Tensor::from_host(backend_, host_.data(), shape_, byol::DType::u8);
      // No synchronize: the views are used on the same stream, after the kernel; the pixels'
      // device copy is freed stream-ordered and the parameters are staged by the backend. A
      // wait here would hold the next batch until the GPU finished the running step, and the
      // step after it could only be queued once the GPU had gone idle.
      backend_->augment(out_.f32(), on_device.u8(), params.data(), N, H, W, C, config_.out_h, config_.out_w);
    }
  }

  Napi::Promise::Deferred deferred_;
  byol::Backend* backend_;
  byol::Tensor images_;          // a NativeTensor's storage (shared, survives dispose())
  std::vector<uint8_t> host_;    // or a copy of the Uint8Array (JS may reuse its buffer)
  std::vector<int64_t> shape_;
  byol::AugmentConfig config_;
  uint64_t seed_;
  uint32_t epoch_;
  std::vector<int64_t> indices_;
  int view_;
  byol::Tensor out_;
};

Napi::Value Augment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto arg = [&](size_t i) { return i < info.Length() ? info[i] : env.Undefined(); };
  byol::Tensor images;
  std::vector<uint8_t> host;
  std::vector<int64_t> shape;
  if (arg(0).IsTypedArray()) {
    Napi::TypedArray t = arg(0).As<Napi::TypedArray>();
    if (t.TypedArrayType() != napi_uint8_array && t.TypedArrayType() != napi_uint8_clamped_array)
      ThrowExpected(env, "images", "Uint8Array or uint8 Tensor", arg(0));
    shape = ParseImageShape(env, arg(1));
    size_t expected = static_cast<size_t>(shape[0] * shape[1] * shape[2] * shape[3]);
    if (t.ByteLength() != expected) {
      throw Napi::RangeError::New(env, "Expected images to hold N*H*W*C = " + std::to_string(expected) +
                                           " bytes for shape [" + std::to_string(shape[0]) + ", " +
                                           std::to_string(shape[1]) + ", " + std::to_string(shape[2]) + ", " +
                                           std::to_string(shape[3]) + "] but received " +
                                           std::to_string(t.ByteLength()));
    }
    const uint8_t* data = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    host.assign(data, data + expected);
  } else {
    images = UnwrapTensor(arg(0), "images");
    if (images.dtype() != byol::DType::u8 || images.ndim() != 4 || (images.dim(3) != 1 && images.dim(3) != 3) ||
        images.dim(1) < 1 || images.dim(2) < 1) {
      throw Napi::TypeError::New(env, "Expected images to be a uint8 tensor of core shape [N, H, W, C] with C 1 or 3 but received " +
                                          std::string(byol::dtype_name(images.dtype())) + " " +
                                          byol::shape_string(images.shape()));
    }
    shape = images.shape();
  }
  byol::AugmentConfig config = ParseConfig(env, arg(2), static_cast<int>(shape[3]));
  uint64_t seed = ParseSeed(env, arg(3));
  uint32_t epoch = ParseU32(env, arg(4), "epoch");
  std::vector<int64_t> indices = ParseIndices(env, arg(5), static_cast<size_t>(shape[0]));
  int view = ParseView(env, arg(6));
  if (!arg(7).IsString()) ThrowExpected(env, "device", "device name ('cpu', 'cuda', 'cuda:N')", arg(7));
  std::string device = arg(7).As<Napi::String>().Utf8Value();
  byol::Backend* backend;
  try {
    backend = GetBackend(device);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  auto* worker = new AugmentWorker(env, backend, std::move(images), std::move(host), std::move(shape), config,
                                   seed, epoch, std::move(indices), view);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// Debugging and tests: the parameters augment() would use, as plain objects.
Napi::Value DrawAugmentParams(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto arg = [&](size_t i) { return i < info.Length() ? info[i] : env.Undefined(); };
  int channels = 3;
  if (arg(0).IsObject() && arg(0).As<Napi::Object>().Get("mean").IsArray())
    channels = static_cast<int>(arg(0).As<Napi::Object>().Get("mean").As<Napi::Array>().Length());
  if (channels != 1 && channels != 3) channels = 3;  // ParseConfig reports the mismatch
  byol::AugmentConfig config = ParseConfig(env, arg(0), channels);
  uint64_t seed = ParseSeed(env, arg(1));
  uint32_t epoch = ParseU32(env, arg(2), "epoch");
  Napi::Value idx = arg(3);
  size_t n = idx.IsArray() ? idx.As<Napi::Array>().Length()
             : idx.IsTypedArray() ? idx.As<Napi::TypedArray>().ElementLength() : 0;
  std::vector<int64_t> indices = ParseIndices(env, idx, n);
  int view = ParseView(env, arg(4));
  uint32_t H = ParseU32(env, arg(5), "height"), W = ParseU32(env, arg(6), "width");
  if (H < 1 || W < 1 || H > 1u << 20 || W > 1u << 20)
    throw Napi::RangeError::New(env, "Expected height and width between 1 and 2^20 but received " +
                                         std::to_string(H) + "x" + std::to_string(W));
  std::vector<byol::AugmentParams> params(n);
  try {
    byol::draw_augment_params(params.data(), config, seed, epoch, indices.data(), static_cast<int>(n), view,
                              static_cast<int>(H), static_cast<int>(W));
  } catch (const byol::Error& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  Napi::Array out = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; ++i) {
    const byol::AugmentParams& p = params[i];
    Napi::Object o = Napi::Object::New(env);
    Napi::Array box = Napi::Array::New(env, 4);
    box.Set(0u, p.crop_x0);
    box.Set(1u, p.crop_y0);
    box.Set(2u, p.crop_w);
    box.Set(3u, p.crop_h);
    o.Set("crop", box);
    o.Set("flip", p.flip != 0);
    o.Set("jitter", p.jitter != 0);
    o.Set("brightness", p.brightness);
    o.Set("contrast", p.contrast);
    o.Set("saturation", p.saturation);
    o.Set("hue", p.hue);
    Napi::Array order = Napi::Array::New(env, 4);
    static const char* kOpNames[4] = {"brightness", "contrast", "saturation", "hue"};
    for (uint32_t k = 0; k < 4; ++k) order.Set(k, kOpNames[p.jitter_order[k]]);
    o.Set("jitterOrder", order);
    o.Set("grayscale", p.grayscale != 0);
    o.Set("blur", p.blur != 0);
    o.Set("blurSigma", p.blur_sigma);
    Napi::Array taps = Napi::Array::New(env, 2);
    taps.Set(0u, p.blur_size_h);
    taps.Set(1u, p.blur_size_w);
    o.Set("blurSize", taps);
    o.Set("solarize", p.solarize != 0);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

}  // namespace

void InitAugment(Napi::Env env, Napi::Object exports) {
  exports.Set("augment", Napi::Function::New(env, Augment, "augment"));
  exports.Set("drawAugmentParams", Napi::Function::New(env, DrawAugmentParams, "drawAugmentParams"));
}

}  // namespace byol_addon
