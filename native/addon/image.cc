// image.cc: the image folders' decoding fast paths (lib/data/folder.ts), off the main thread.
// - resizeCover(pixels, h, w, c, outH, outW): scales an image to cover outH x outW and takes
//   the centre, in one separable pass per axis with an antialiased triangle (bilinear) filter
//   whose support widens with the reduction (the filter of PIL's and torchvision's default
//   resize), in float, rounded to uint8. The crop box is exact (fractional), centred.
// - decodeJpeg(bytes, channels[, outH, outW]) (where libjpeg was found at build time:
//   binding.gyp defines BYOL_WITH_JPEG): baseline and progressive JPEGs with libjpeg's default
//   (exact integer) IDCT and fancy upsampling, which is what sharp's libvips does, so without a
//   resize the pixels are sharp's. With a target size, libjpeg's DCT scaling first reduces by
//   the largest power of two that keeps the image at least covering the target, then
//   resizeCover finishes. It resolves null, leaving the file to sharp, for what sharp would
//   treat differently or word better: colour to gray, CMYK/YCCK, an embedded ICC profile, any
//   libjpeg warning (corrupt or truncated data) and any error. libjpeg's fatal errors leave
//   through longjmp from our error manager, never exit().
#include <algorithm>
#include <stdexcept>
#include <cmath>
#include <cstring>
#include <vector>

#include "addon.h"

namespace byol_addon {
namespace {

// Per output position of one axis: the first source index and the normalized weights of the
// triangle filter over [first, first + weights.size()).
struct AxisTaps {
  std::vector<int> first;
  std::vector<int> count;
  std::vector<float> weights;  // count[i] weights per output, at offset i * max_taps
  int max_taps = 0;
};

// Output i of `out_len` samples the source at centre begin + (i + 0.5) * scale, where scale =
// length / out_len source pixels per output pixel; the filter's radius is max(1, scale).
AxisTaps MakeTaps(int in_len, double begin, double length, int out_len) {
  AxisTaps t;
  const double scale = length / out_len;
  const double filter_scale = std::max(1.0, scale);
  const double support = filter_scale;  // the triangle's radius 1, stretched when reducing
  t.max_taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_len);
  t.count.resize(out_len);
  t.weights.assign(static_cast<size_t>(out_len) * t.max_taps, 0.0f);
  for (int i = 0; i < out_len; i++) {
    const double centre = begin + (i + 0.5) * scale;
    int lo = static_cast<int>(std::floor(centre - support + 0.5));
    int hi = static_cast<int>(std::floor(centre + support + 0.5));
    lo = std::max(lo, 0);
    hi = std::min({hi, in_len, lo + t.max_taps});
    float* w = t.weights.data() + static_cast<size_t>(i) * t.max_taps;
    double sum = 0;
    for (int x = lo; x < hi; x++) {
      const double d = std::fabs((x + 0.5 - centre) / filter_scale);
      w[x - lo] = static_cast<float>(d < 1 ? 1 - d : 0);
      sum += w[x - lo];
    }
    // The box lies inside the image, so some tap is within the filter's radius: sum > 0.
    for (int x = lo; x < hi; x++) w[x - lo] = static_cast<float>(w[x - lo] / sum);
    t.first[i] = lo;
    t.count[i] = hi - lo;
  }
  return t;
}

}  // namespace

// Also used by decodeJpeg below. `dst` holds out_h * out_w * c bytes.
void ResizeCover(const uint8_t* src, int h, int w, int c, int out_h, int out_w, uint8_t* dst) {
  if (c < 1 || c > 4) throw std::invalid_argument("resizeCover: 1 to 4 channels");
  const double scale = std::max(static_cast<double>(out_h) / h, static_cast<double>(out_w) / w);
  const double box_h = out_h / scale, box_w = out_w / scale;
  const AxisTaps xs = MakeTaps(w, (w - box_w) / 2, box_w, out_w);
  const AxisTaps ys = MakeTaps(h, (h - box_h) / 2, box_h, out_h);
  // Horizontal pass over the rows the vertical taps read, then the vertical pass.
  const int row_lo = ys.first[0];
  const int row_hi = ys.first[out_h - 1] + ys.count[out_h - 1];
  std::vector<float> tmp(static_cast<size_t>(row_hi - row_lo) * out_w * c);
  for (int y = row_lo; y < row_hi; y++) {
    const uint8_t* in = src + static_cast<size_t>(y) * w * c;
    float* out = tmp.data() + static_cast<size_t>(y - row_lo) * out_w * c;
    for (int x = 0; x < out_w; x++) {
      const float* wt = xs.weights.data() + static_cast<size_t>(x) * xs.max_taps;
      const uint8_t* p = in + static_cast<size_t>(xs.first[x]) * c;
      float acc[4] = {0, 0, 0, 0};  // c <= 4
      for (int k = 0; k < xs.count[x]; k++) {
        for (int ch = 0; ch < c; ch++) acc[ch] += wt[k] * p[k * c + ch];
      }
      for (int ch = 0; ch < c; ch++) out[x * c + ch] = acc[ch];
    }
  }
  // Vertical: whole rows at a time (contiguous, vectorizable), taps outermost.
  const size_t row = static_cast<size_t>(out_w) * c;
  std::vector<float> acc(row);
  for (int y = 0; y < out_h; y++) {
    const float* wt = ys.weights.data() + static_cast<size_t>(y) * ys.max_taps;
    const float* base = tmp.data() + static_cast<size_t>(ys.first[y] - row_lo) * row;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < ys.count[y]; k++) {
      const float wk = wt[k];
      const float* in = base + k * row;
      for (size_t i = 0; i < row; i++) acc[i] += wk * in[i];
    }
    uint8_t* out = dst + static_cast<size_t>(y) * row;
    for (size_t i = 0; i < row; i++) out[i] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, acc[i] + 0.5f)));
  }
}

namespace {

// Reads an optional non-negative integer argument (0 when absent).
int OptionalSize(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || info[i].IsUndefined()) return 0;
  const double v = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (v != std::floor(v) || v < 1 || v > 16384) ThrowExpected(info.Env(), name, "integer between 1 and 16384", info[i]);
  return static_cast<int>(v);
}

class ResizeWorker : public Napi::AsyncWorker {
 public:
  ResizeWorker(Napi::Env env, std::vector<uint8_t> src, int h, int w, int c, int out_h, int out_w)
      : Napi::AsyncWorker(env, "byol:resizeCover"), deferred_(Napi::Promise::Deferred::New(env)), src_(std::move(src)),
        h_(h), w_(w), c_(c), out_h_(out_h), out_w_(out_w) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override {
    try {
      dst_.resize(static_cast<size_t>(out_h_) * out_w_ * c_);
      ResizeCover(src_.data(), h_, w_, c_, out_h_, out_w_, dst_.data());
    } catch (const std::bad_alloc&) {
      SetError("out of memory resizing an image");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    Napi::Uint8Array out = Napi::Uint8Array::New(Env(), dst_.size());
    std::memcpy(out.Data(), dst_.data(), dst_.size());
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<uint8_t> src_;
  int h_, w_, c_, out_h_, out_w_;
  std::vector<uint8_t> dst_;
};

Napi::Value ResizeCoverBinding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowExpected(env, "pixels", "Uint8Array", info.Length() < 1 ? env.Undefined() : info[0]);
  }
  const int h = OptionalSize(info, 1, "height"), w = OptionalSize(info, 2, "width");
  const int c = OptionalSize(info, 3, "channels");
  const int out_h = OptionalSize(info, 4, "outHeight"), out_w = OptionalSize(info, 5, "outWidth");
  if (!h || !w || !c || !out_h || !out_w) {
    Napi::TypeError::New(env, "resizeCover(pixels, height, width, channels, outHeight, outWidth) needs every argument")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array pixels = info[0].As<Napi::Uint8Array>();
  if (pixels.ElementLength() != static_cast<size_t>(h) * w * c) {
    ThrowExpected(env, "pixels", "Uint8Array of height*width*channels = " + std::to_string(static_cast<size_t>(h) * w * c) +
                                     " bytes", info[0]);
  }
  auto* worker = new ResizeWorker(env, std::vector<uint8_t>(pixels.Data(), pixels.Data() + pixels.ElementLength()), h, w, c,
                                  out_h, out_w);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace
}  // namespace byol_addon

#ifdef BYOL_WITH_JPEG
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE

#include <jpeglib.h>

namespace byol_addon {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  bool warned = false;
};

void OnFatal(j_common_ptr cinfo) {
  std::longjmp(reinterpret_cast<ErrorManager*>(cinfo->err)->jump, 1);
}

void OnMessage(j_common_ptr cinfo, int level) {
  if (level < 0) reinterpret_cast<ErrorManager*>(cinfo->err)->warned = true;  // -1: a warning
}

bool HasIccProfile(j_decompress_ptr cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != nullptr; m = m->next) {
    if (m->marker == JPEG_APP0 + 2 && m->data_length >= 12 && std::memcmp(m->data, "ICC_PROFILE", 11) == 0) {
      return true;
    }
  }
  return false;
}

// Decodes `bytes` (reduced by DCT scaling when a target size allows it); false when the file is
// declined (see the contract) or damaged. No C++ object with a destructor may live across the
// setjmp: the longjmp would skip it.
bool Decode(const std::vector<uint8_t>& bytes, int channels, int out_h, int out_w, std::vector<uint8_t>* out, int* width,
            int* height) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnFatal;
  err.pub.emit_message = OnMessage;
  // `out` is resized inside; its storage is freed by its owner even after a longjmp.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_save_markers(&cinfo, JPEG_APP0 + 2, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  const J_COLOR_SPACE in = cinfo.jpeg_color_space;
  const bool take = !HasIccProfile(&cinfo) && cinfo.num_components == (in == JCS_GRAYSCALE ? 1 : 3) &&
                    (in == JCS_GRAYSCALE || (in == JCS_YCbCr && channels == 3));
  if (!take || err.warned) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  if (out_h > 0) {
    // The largest 1/d (d = 2, 4, 8) at which the image still covers the target.
    const double cover = std::max(static_cast<double>(out_h) / cinfo.image_height,
                                  static_cast<double>(out_w) / cinfo.image_width);
    unsigned d = 1;
    while (d < 8 && cover * (d * 2) <= 1.0) d *= 2;
    cinfo.scale_num = 1;
    cinfo.scale_denom = d;
  }
  jpeg_start_decompress(&cinfo);
  *width = static_cast<int>(cinfo.output_width);
  *height = static_cast<int>(cinfo.output_height);
  const size_t stride = static_cast<size_t>(cinfo.output_width) * channels;
  try {
    out->resize(stride * cinfo.output_height);
  } catch (...) {
    jpeg_destroy_decompress(&cinfo);
    throw;  // bad_alloc: the worker declines the file
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return !err.warned;
}

class DecodeJpegWorker : public Napi::AsyncWorker {
 public:
  DecodeJpegWorker(Napi::Env env, std::vector<uint8_t> bytes, int channels, int out_h, int out_w)
      : Napi::AsyncWorker(env, "byol:decodeJpeg"),
        deferred_(Napi::Promise::Deferred::New(env)),
        bytes_(std::move(bytes)),
        channels_(channels),
        out_h_(out_h),
        out_w_(out_w) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      ok_ = Decode(bytes_, channels_, out_h_, out_w_, &pixels_, &width_, &height_);
      if (ok_ && out_h_ > 0 && (height_ != out_h_ || width_ != out_w_)) {
        std::vector<uint8_t> resized(static_cast<size_t>(out_h_) * out_w_ * channels_);
        ResizeCover(pixels_.data(), height_, width_, channels_, out_h_, out_w_, resized.data());
        pixels_.swap(resized);
        height_ = out_h_;
        width_ = out_w_;
      }
    } catch (const std::exception&) {
      ok_ = false;  // out of memory: sharp will say what is wrong (or fail the same way, with its message)
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!ok_) {
      deferred_.Resolve(env.Null());
      return;
    }
    Napi::Object result = Napi::Object::New(env);
    Napi::Uint8Array data = Napi::Uint8Array::New(env, pixels_.size());
    std::memcpy(data.Data(), pixels_.data(), pixels_.size());
    result.Set("data", data);
    result.Set("width", Napi::Number::New(env, width_));
    result.Set("height", Napi::Number::New(env, height_));
    deferred_.Resolve(result);
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<uint8_t> bytes_;  // a copy: JavaScript may reuse its buffer meanwhile
  int channels_;
  int out_h_, out_w_;  // 0: no resize
  std::vector<uint8_t> pixels_;
  int width_ = 0, height_ = 0;
  bool ok_ = false;
};

Napi::Value DecodeJpeg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowExpected(env, "bytes", "Uint8Array", info.Length() < 1 ? env.Undefined() : info[0]);
  }
  const int channels = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
  if (channels != 1 && channels != 3) ThrowExpected(env, "channels", "1 or 3", info.Length() > 1 ? info[1] : env.Undefined());
  const int out_h = OptionalSize(info, 2, "outHeight"), out_w = OptionalSize(info, 3, "outWidth");
  if ((out_h == 0) != (out_w == 0)) ThrowExpected(env, "outWidth", "integer with outHeight", info.Length() > 3 ? info[3] : env.Undefined());
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  auto* worker = new DecodeJpegWorker(env, std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ElementLength()),
                                      channels, out_h, out_w);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace
}  // namespace byol_addon
#endif

namespace byol_addon {

void InitImage(Napi::Env env, Napi::Object exports) {
  exports.Set("resizeCover", Napi::Function::New(env, ResizeCoverBinding, "resizeCover"));
#ifdef BYOL_WITH_JPEG
  exports.Set("decodeJpeg", Napi::Function::New(env, DecodeJpeg, "decodeJpeg"));
  exports.Set("jpegVersion", Napi::Number::New(env, JPEG_LIB_VERSION));
#endif
}

}  // namespace byol_addon
