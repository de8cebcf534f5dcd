// image.cc: decodeJpeg(bytes, channels), the image folders' JPEG fast path (lib/data/folder.ts).
// Contract: decodes baseline and progressive JPEGs with libjpeg(-turbo) off the main thread
// into height x width x channels uint8 (gray stays gray or is repeated into RGB; YCbCr becomes
// RGB) with the library's default (exact integer) IDCT and fancy upsampling, which is what
// sharp's libvips does, so the pixels are sharp's. It resolves null, and leaves the file to
// sharp, for what sharp would treat differently or word better: colour to gray, CMYK/YCCK,
// an embedded ICC profile, any libjpeg warning (corrupt or truncated data) and any error.
// libjpeg's fatal errors leave through longjmp from our error manager, never exit().
// Built only where jpeglib.h was found (binding.gyp defines BYOL_WITH_JPEG); elsewhere the
// binding is absent and every JPEG goes through sharp.
#include "addon.h"

#ifdef BYOL_WITH_JPEG
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE
#include <cstring>
#include <vector>

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

// Decodes `bytes`; false when the file is declined (see the contract) or damaged. No C++
// object with a destructor may live across the setjmp: the longjmp would skip it.
bool Decode(const std::vector<uint8_t>& bytes, int channels, std::vector<uint8_t>* out, int* width, int* height) {
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
  DecodeJpegWorker(Napi::Env env, std::vector<uint8_t> bytes, int channels)
      : Napi::AsyncWorker(env, "byol:decodeJpeg"),
        deferred_(Napi::Promise::Deferred::New(env)),
        bytes_(std::move(bytes)),
        channels_(channels) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      ok_ = Decode(bytes_, channels_, &pixels_, &width_, &height_);
    } catch (const std::bad_alloc&) {
      ok_ = false;  // sharp will say what is wrong (or fail the same way, with its message)
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
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  auto* worker = new DecodeJpegWorker(env, std::vector<uint8_t>(bytes.Data(), bytes.Data() + bytes.ElementLength()),
                                      channels);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void InitImage(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeJpeg", Napi::Function::New(env, DecodeJpeg, "decodeJpeg"));
  exports.Set("jpegVersion", Napi::Number::New(env, JPEG_LIB_VERSION));
}

}  // namespace byol_addon

#else  // no jpeglib.h at build time: JPEGs go through sharp

namespace byol_addon {
void InitImage(Napi::Env, Napi::Object) {}
}  // namespace byol_addon

#endif
