// tensor.cc: the NativeTensor handle (a byol::Tensor behind a JS object) and its bindings.
// Contract: JS passes public shapes (4-D = NCHW, or NHWC data when layout is 'nhwc'); the core
// stores 4-D tensors NHWC, so data is permuted here, at creation and readback, never in JS.
// The handle reports the core shape. dispose() frees the storage at once and is idempotent;
// any other use after it throws an Error naming the member.
#include <napi.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <new>
#include <sstream>
#include <unordered_map>

#include "addon.h"

namespace byol_addon {


namespace {

constexpr uint32_t kMaxDims = 8;
constexpr double kMaxSafeInteger = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

// Marks objects created by this class, so that UnwrapTensor cannot be fooled by an object
// that merely passes `instanceof` (Symbol.hasInstance is writable from JS).
const napi_type_tag kTensorTag = {0x6279'6f6c'5465'6e73ULL, 0x8f3a'51c2'9d04'e7b1ULL};

enum class Layout { nchw, nhwc };

// Handles currently alive and the bytes they hold: observable through tensorStats() so that
// tests can check dispose() and the finalizer really free memory.
std::atomic<int64_t> g_live_handles{0};
std::atomic<int64_t> g_live_bytes{0};

// ---------------------------------------------------------------------------------------
// Messages in the shape of lib/validate.ts: "Expected <what> for <name> but received <v>".

std::string DescribeValue(const Napi::Value& value) {
  std::ostringstream os;
  switch (value.Type()) {
    case napi_undefined: return "undefined of type undefined";
    case napi_null: return "null of type null";
    case napi_boolean: return std::string(value.As<Napi::Boolean>() ? "true" : "false") + " of type boolean";
    case napi_number: {
      double v = value.As<Napi::Number>().DoubleValue();
      if (std::isnan(v)) os << "NaN";
      else if (std::isinf(v)) os << (v > 0 ? "Infinity" : "-Infinity");
      else { os.precision(17); os << v; }
      os << " of type number";
      return os.str();
    }
    case napi_string: return "\"" + value.As<Napi::String>().Utf8Value() + "\" of type string";
    case napi_bigint: return "bigint of type bigint";
    case napi_symbol: return "symbol of type symbol";
    case napi_function: return "function of type function";
    case napi_external: return "external of type object";
    default: break;
  }
  if (value.IsArray()) {
    os << "array of length " << value.As<Napi::Array>().Length() << " of type array";
    return os.str();
  }
  Napi::Value ctor = value.As<Napi::Object>().Get("constructor");
  if (ctor.IsFunction()) {
    Napi::Value name = ctor.As<Napi::Object>().Get("name");
    if (name.IsString()) return name.As<Napi::String>().Utf8Value() + " of type object";
  }
  return "object of type object";
}

[[noreturn]] void ThrowInvalid(Napi::Env env, const std::string& name, const std::string& expected,
                               const Napi::Value& value) {
  throw Napi::TypeError::New(env, "Expected " + expected + " for " + name + " but received " +
                                      DescribeValue(value));
}

// Turns core exceptions (byol::Error, bad_alloc) into JS errors; node-addon-api only
// converts Napi::Error by itself and would terminate the process on anything else.
template <typename Body>
auto Guarded(Napi::Env env, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "byol: out of host memory while creating a tensor");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// ---------------------------------------------------------------------------------------
// Argument parsing (defense in depth: lib/tensor.ts checks the same things first).

std::vector<int64_t> ParseShape(Napi::Env env, const Napi::Value& value, const char* name) {
  if (!value.IsArray()) ThrowInvalid(env, name, "array of 1 to 8 non-negative integers", value);
  Napi::Array array = value.As<Napi::Array>();
  uint32_t ndim = array.Length();
  if (ndim < 1 || ndim > kMaxDims) {
    throw Napi::TypeError::New(env, std::string("Expected 1 to 8 dimensions for ") + name +
                                        " but received " + std::to_string(ndim));
  }
  std::vector<int64_t> shape(ndim);
  double numel = 1;
  for (uint32_t i = 0; i < ndim; ++i) {
    Napi::Value dim = array.Get(i);
    std::string dim_name = std::string(name) + "[" + std::to_string(i) + "]";
    if (!dim.IsNumber()) ThrowInvalid(env, dim_name, "non-negative integer", dim);
    double v = dim.As<Napi::Number>().DoubleValue();
    if (!(v >= 0 && v <= kMaxSafeInteger) || std::floor(v) != v) {
      ThrowInvalid(env, dim_name, "non-negative integer", dim);
    }
    shape[i] = static_cast<int64_t>(v);
    numel *= v;
  }
  if (numel > kMaxSafeInteger) {
    throw Napi::RangeError::New(env, std::string("Expected at most 2^53 - 1 elements for ") + name +
                                         " but received " + byol::shape_string(shape));
  }
  return shape;
}

Layout ParseLayout(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || info[index].IsUndefined()) return Layout::nchw;
  Napi::Value value = info[index];
  if (value.IsString()) {
    std::string s = value.As<Napi::String>().Utf8Value();
    if (s == "nchw") return Layout::nchw;
    if (s == "nhwc") return Layout::nhwc;
  }
  ThrowInvalid(info.Env(), "layout", "one of 'nchw', 'nhwc'", value);
}

byol::DType ParseDType(Napi::Env env, const Napi::Value& value) {
  if (value.IsString()) {
    std::string s = value.As<Napi::String>().Utf8Value();
    if (s == "float32") return byol::DType::f32;
    if (s == "int32") return byol::DType::i32;
    if (s == "uint8") return byol::DType::u8;
  }
  ThrowInvalid(env, "dtype", "one of 'float32', 'int32', 'uint8'", value);
}

std::string ParseDevice(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index || !info[index].IsString()) {
    ThrowInvalid(info.Env(), "device", "device name string", info.Length() > index ? info[index] : info.Env().Undefined());
  }
  return info[index].As<Napi::String>().Utf8Value();
}

const char* TypedArrayName(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "TypedArray";
  }
}

// ---------------------------------------------------------------------------------------
// NCHW <-> NHWC. One side is read or written contiguously, the other with stride C; the copy
// is memory bound either way, and C is small for images (1 or 3), so no tiling is needed.
// OpenMP only pays for itself on large tensors (thread start-up is a few microseconds).

template <typename T>
void NchwToNhwc(T* dst, const T* src, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for collapse(2) if (N * C * HW > (1 << 18))
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const T* from = src + (n * C + c) * HW;
      T* to = dst + n * HW * C + c;
      for (int64_t i = 0; i < HW; ++i) to[i * C] = from[i];
    }
  }
}

template <typename T>
void NhwcToNchw(T* dst, const T* src, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for collapse(2) if (N * C * HW > (1 << 18))
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const T* from = src + n * HW * C + c;
      T* to = dst + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) to[i] = from[i * C];
    }
  }
}

// core_shape is (N, H, W, C). to_core: src is NCHW, dst NHWC; otherwise the reverse.
void PermuteImages(bool to_core, void* dst, const void* src, const std::vector<int64_t>& core_shape,
                   size_t element_size) {
  int64_t N = core_shape[0], HW = core_shape[1] * core_shape[2], C = core_shape[3];
  auto run = [&](auto* typed_dst) {
    using T = std::remove_pointer_t<decltype(typed_dst)>;
    if (to_core) NchwToNhwc<T>(typed_dst, static_cast<const T*>(src), N, C, HW);
    else NhwcToNchw<T>(typed_dst, static_cast<const T*>(src), N, C, HW);
  };
  switch (element_size) {
    case 1: run(static_cast<uint8_t*>(dst)); break;
    case 4: run(static_cast<uint32_t*>(dst)); break;
    case 8: run(static_cast<uint64_t*>(dst)); break;
    default: BYOL_FAIL("PermuteImages: unsupported element size ", element_size);
  }
}

std::vector<int64_t> NchwToCoreShape(const std::vector<int64_t>& s) { return {s[0], s[2], s[3], s[1]}; }

// ---------------------------------------------------------------------------------------
// The per-environment constructor (worker_threads each load the addon into their own env).
// A map rather than Env::SetInstanceData, which is a single slot that other addon files
// may want.

std::mutex g_constructors_mutex;
std::unordered_map<napi_env, Napi::FunctionReference*> g_constructors;

Napi::Function Constructor(Napi::Env env) {
  std::lock_guard<std::mutex> lock(g_constructors_mutex);
  auto found = g_constructors.find(env);
  BYOL_CHECK(found != g_constructors.end(), "byol: the tensor module is not initialized in this environment");
  return found->second->Value();
}

// ---------------------------------------------------------------------------------------

Napi::Value MakeTypedArray(Napi::Env env, byol::DType dtype, Napi::ArrayBuffer buffer, size_t length) {
  switch (dtype) {
    case byol::DType::f32: return Napi::Float32Array::New(env, length, buffer, 0);
    case byol::DType::i32: return Napi::Int32Array::New(env, length, buffer, 0);
    case byol::DType::u8: return Napi::Uint8Array::New(env, length, buffer, 0);
    case byol::DType::i64: return Napi::BigInt64Array::New(env, length, buffer, 0);
  }
  throw Napi::Error::New(env, "toArray: unknown dtype");
}

// Downloads (and for 4-D tensors permutes NHWC -> NCHW) off the main thread, straight into
// an ArrayBuffer allocated beforehand on the main thread: its backing store does not move
// and nobody else can see it until the promise resolves. The worker holds its own reference
// to the storage, so a dispose() during the read frees the memory when the read finishes.
class ToArrayWorker : public Napi::AsyncWorker {
 public:
  ToArrayWorker(Napi::Env env, byol::Tensor tensor, bool permute, Napi::ArrayBuffer out)
      : Napi::AsyncWorker(env, "byol:Tensor.toArray"),
        deferred_(Napi::Promise::Deferred::New(env)),
        tensor_(std::move(tensor)),
        permute_(permute),
        out_(Napi::Persistent(out)),
        out_data_(out.Data()) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  void Execute() override {
    if (tensor_.nbytes() == 0) return;
    const size_t element_size = byol::dtype_size(tensor_.dtype());
    if (tensor_.device() == byol::DeviceType::cpu) {
      // CPU storage is host memory: copy or permute from it directly, no staging copy; on
      // the compute thread, like every parallel copy.
      RunOnComputeThread([&] {
        if (permute_) PermuteImages(false, out_data_, tensor_.raw(), tensor_.shape(), element_size);
        else tensor_.to_host(out_data_);
      });
      return;
    }
    if (!permute_) {
      tensor_.to_host(out_data_);
      return;
    }
    std::vector<uint8_t> staging(tensor_.nbytes());
    tensor_.to_host(staging.data());
    RunOnComputeThread([&] { PermuteImages(false, out_data_, staging.data(), tensor_.shape(), element_size); });
  }

  void OnOK() override {
    Napi::Env env = Env();
    deferred_.Resolve(MakeTypedArray(env, tensor_.dtype(), out_.Value(), static_cast<size_t>(tensor_.numel())));
  }

  void OnError(const Napi::Error& error) override {
    deferred_.Reject(Napi::Error::New(Env(), "Tensor.toArray failed: " + error.Message()).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  byol::Tensor tensor_;
  bool permute_;
  Napi::Reference<Napi::ArrayBuffer> out_;
  void* out_data_;
};

}  // namespace

// ---------------------------------------------------------------------------------------

class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTensor",
                       {
                           InstanceAccessor<&NativeTensor::GetShape>("shape"),
                           InstanceAccessor<&NativeTensor::GetDType>("dtype"),
                           InstanceAccessor<&NativeTensor::GetDevice>("device"),
                           InstanceAccessor<&NativeTensor::GetNbytes>("nbytes"),
                           InstanceAccessor<&NativeTensor::GetDisposed>("disposed"),
                           InstanceMethod<&NativeTensor::ToArray>("toArray"),
                           InstanceMethod<&NativeTensor::Dispose>("dispose"),
                       });
  }

  // Only native code constructs handles (WrapTensor passes the tensor in an External, which
  // JavaScript cannot create).
  explicit NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(),
                                 "NativeTensor cannot be constructed from JavaScript; use Tensor.from() or Tensor.zeros()");
    }
    tensor_ = std::move(*info[0].As<Napi::External<byol::Tensor>>().Data());
    info.This().As<Napi::Object>().TypeTag(&kTensorTag);
    accounted_bytes_ = static_cast<int64_t>(tensor_.nbytes());
    g_live_handles.fetch_add(1);
    g_live_bytes.fetch_add(accounted_bytes_);
    // Host memory the GC cannot see otherwise: telling V8 about it makes unreferenced tensors
    // get collected (and freed by the finalizer) under memory pressure. GPU memory is not
    // V8's business, so it is not reported.
    if (tensor_.device() == byol::DeviceType::cpu && accounted_bytes_ > 0) {
      Napi::MemoryManagement::AdjustExternalMemory(info.Env(), accounted_bytes_);
      reported_bytes_ = accounted_bytes_;
    }
  }

  ~NativeTensor() override { Release(Env()); }

  bool disposed() const { return disposed_; }
  const byol::Tensor& tensor() const { return tensor_; }

 private:
  void Release(Napi::BasicEnv env) {
    if (disposed_) return;
    disposed_ = true;
    tensor_ = byol::Tensor();
    g_live_handles.fetch_sub(1);
    g_live_bytes.fetch_sub(accounted_bytes_);
    if (reported_bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(env, -reported_bytes_);
    reported_bytes_ = 0;
  }

  const byol::Tensor& Live(Napi::Env env, const char* member) const {
    if (disposed_) {
      throw Napi::Error::New(env, std::string("Tensor was disposed: cannot use ") + member +
                                      " after dispose()");
    }
    return tensor_;
  }

  Napi::Value GetShape(const Napi::CallbackInfo& info) {
    const byol::Tensor& t = Live(info.Env(), "shape");
    Napi::Array shape = Napi::Array::New(info.Env(), t.shape().size());
    for (size_t i = 0; i < t.shape().size(); ++i) {
      shape.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(t.shape()[i])));
    }
    return shape;
  }

  Napi::Value GetDType(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), byol::dtype_name(Live(info.Env(), "dtype").dtype()));
  }

  Napi::Value GetDevice(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), BackendDeviceName(Live(info.Env(), "device").backend()));
  }

  Napi::Value GetNbytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(Live(info.Env(), "nbytes").nbytes()));
  }

  Napi::Value GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

  // toArray(layout = 'nchw'): Promise of a new TypedArray of the tensor's dtype. 'nhwc' reads a
  // 4-D tensor in the core's own order (no permutation).
  Napi::Value ToArray(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const byol::Tensor& t = Live(env, "toArray()");
    Layout layout = ParseLayout(info, 0);
    if (layout == Layout::nhwc && t.ndim() != 4) {
      throw Napi::TypeError::New(env, "Expected a 4-D tensor for layout 'nhwc' but the tensor has shape " +
                                          byol::shape_string(t.shape()));
    }
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, t.nbytes());
    auto* worker = new ToArrayWorker(env, t, t.ndim() == 4 && layout == Layout::nchw, out);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release(info.Env());
    return info.Env().Undefined();
  }

  byol::Tensor tensor_;
  bool disposed_ = false;
  int64_t accounted_bytes_ = 0;
  int64_t reported_bytes_ = 0;
};

namespace {

// tensorFromData(data, shape, device, layout = 'nchw'): a new handle holding a copy of data.
// The dtype follows the TypedArray: Float32Array -> float32, Int32Array -> int32,
// Uint8Array / Uint8ClampedArray (and Buffer) -> uint8.
Napi::Value TensorFromData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* expected_data = "Float32Array, Int32Array or Uint8Array";
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    ThrowInvalid(env, "data", expected_data, info.Length() < 1 ? env.Undefined() : info[0]);
  }
  napi_typedarray_type array_type;
  size_t length = 0;
  void* data = nullptr;
  napi_status status = napi_get_typedarray_info(env, info[0], &array_type, &length, &data, nullptr, nullptr);
  NAPI_THROW_IF_FAILED(env, status, Napi::Value());
  byol::DType dtype;
  switch (array_type) {
    case napi_float32_array: dtype = byol::DType::f32; break;
    case napi_int32_array: dtype = byol::DType::i32; break;
    case napi_uint8_array:
    case napi_uint8_clamped_array: dtype = byol::DType::u8; break;
    default:
      throw Napi::TypeError::New(env, std::string("Expected ") + expected_data + " for data but received " +
                                          TypedArrayName(array_type) + " of type object");
  }
  std::vector<int64_t> shape = ParseShape(env, info.Length() > 1 ? info[1] : env.Undefined(), "shape");
  std::string device = ParseDevice(info, 2);
  Layout layout = ParseLayout(info, 3);
  if (layout == Layout::nhwc && shape.size() != 4) {
    throw Napi::TypeError::New(env, "Expected a 4-D shape for layout 'nhwc' but received " + byol::shape_string(shape));
  }
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel != static_cast<int64_t>(length)) {
    throw Napi::TypeError::New(env, "Expected data of length " + std::to_string(numel) + " for shape " +
                                        byol::shape_string(shape) + " but received length " + std::to_string(length));
  }
  bool permute = shape.size() == 4 && layout == Layout::nchw;
  std::vector<int64_t> core_shape = permute ? NchwToCoreShape(shape) : shape;

  return Guarded(env, [&]() -> Napi::Value {
    byol::Backend* backend = GetBackend(device);
    byol::Tensor tensor(backend, core_shape, dtype);
    if (tensor.nbytes() > 0) {
      if (!permute) {
        backend->upload(tensor.raw(), data, tensor.nbytes());
      } else if (backend->type() == byol::DeviceType::cpu) {
        PermuteImages(true, tensor.raw(), data, core_shape, byol::dtype_size(dtype));
      } else {
        std::vector<uint8_t> staging(tensor.nbytes());
        PermuteImages(true, staging.data(), data, core_shape, byol::dtype_size(dtype));
        backend->upload(tensor.raw(), staging.data(), staging.size());
      }
    }
    return WrapTensor(env, std::move(tensor));
  });
}

// tensorZeros(shape, dtype, device): shape in the public layout (4-D = NCHW).
Napi::Value TensorZeros(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = ParseShape(env, info.Length() > 0 ? info[0] : env.Undefined(), "shape");
  byol::DType dtype = ParseDType(env, info.Length() > 1 ? info[1] : env.Undefined());
  std::string device = ParseDevice(info, 2);
  std::vector<int64_t> core_shape = shape.size() == 4 ? NchwToCoreShape(shape) : shape;
  return Guarded(env, [&]() -> Napi::Value {
    return WrapTensor(env, byol::Tensor::zeros(GetBackend(device), core_shape, dtype));
  });
}

// tensorStats(): { handles, bytes } of native tensor handles not yet disposed or collected,
// across the process. Counts handles, so two handles sharing storage count twice.
Napi::Value TensorStats(const Napi::CallbackInfo& info) {
  Napi::Object stats = Napi::Object::New(info.Env());
  stats.Set("handles", Napi::Number::New(info.Env(), static_cast<double>(g_live_handles.load())));
  stats.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(g_live_bytes.load())));
  return stats;
}

}  // namespace

byol::Tensor UnwrapTensor(const Napi::Value& value, const char* arg_name) {
  Napi::Env env = value.Env();
  if (value.IsObject() && value.As<Napi::Object>().CheckTypeTag(&kTensorTag)) {
    NativeTensor* handle = NativeTensor::Unwrap(value.As<Napi::Object>());
    if (handle == nullptr) {
      throw Napi::TypeError::New(env, std::string("Expected Tensor for ") + arg_name + " but received a broken handle");
    }
    if (handle->disposed()) {
      throw Napi::TypeError::New(env, std::string("Expected a live Tensor for ") + arg_name +
                                          " but received a disposed Tensor");
    }
    return handle->tensor();
  }
  ThrowInvalid(env, arg_name, "Tensor", value);
}

Napi::Object WrapTensor(Napi::Env env, byol::Tensor tensor) {
  BYOL_CHECK(tensor.defined(), "WrapTensor: the tensor holds no storage");
  Napi::Function constructor = Constructor(env);
  return constructor.New({Napi::External<byol::Tensor>::New(env, &tensor)});
}

void InitTensor(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = NativeTensor::Define(env);
  {
    std::lock_guard<std::mutex> lock(g_constructors_mutex);
    auto* reference = new Napi::FunctionReference(Napi::Persistent(constructor));
    g_constructors[static_cast<napi_env>(env)] = reference;
  }
  napi_env raw_env = env;
  env.AddCleanupHook([raw_env]() {
    std::lock_guard<std::mutex> lock(g_constructors_mutex);
    auto found = g_constructors.find(raw_env);
    if (found == g_constructors.end()) return;
    delete found->second;
    g_constructors.erase(found);
  });
  exports.Set("NativeTensor", constructor);
  exports.Set("tensorFromData", Napi::Function::New(env, TensorFromData, "tensorFromData"));
  exports.Set("tensorZeros", Napi::Function::New(env, TensorZeros, "tensorZeros"));
  exports.Set("tensorStats", Napi::Function::New(env, TensorStats, "tensorStats"));
}

}  // namespace byol_addon
