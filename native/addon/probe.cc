// probe.cc: sgdLinearStep(weights, bias, velocityW, velocityB, x, rows, start, count, labels, dim,
// classes, lr, momentum, nesterov, weightDecay) -> the summed cross-entropy of the rows before
// the update: one minibatch step of the linear probe (native/cpu/linear_probe.h), synchronous,
// run on the compute thread (the probe calls it from a worker thread). The four state arrays
// are updated in place.
#include <algorithm>
#include <cmath>
#include <string>

#include "../cpu/linear_probe.h"
#include "addon.h"

namespace byol_addon {
namespace {

template <typename Array>
Array Typed(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type, const char* type_name,
            size_t length) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) ThrowExpected(info.Env(), name, type_name, v);
  Array array = v.As<Array>();
  if (length != 0 && array.ElementLength() != length)
    ThrowExpected(info.Env(), name, std::string(type_name) + " of " + std::to_string(length) + " values", v);
  return array;
}

double Number(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi, bool integer) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!std::isfinite(d) || d < lo || d > hi || (integer && std::floor(d) != d))
    ThrowExpected(info.Env(), name, std::string(integer ? "integer" : "number") + " in [" + std::to_string(lo) + ", " +
                                        std::to_string(hi) + "]", v);
  return d;
}

Napi::Value SgdLinearStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto dim = static_cast<int64_t>(Number(info, 9, "dim", 1, 1 << 24, true));
  const auto classes = static_cast<int>(Number(info, 10, "classes", 1, 1 << 20, true));
  const size_t nw = static_cast<size_t>(dim) * classes;
  auto weights = Typed<Napi::Float64Array>(info, 0, "weights", napi_float64_array, "Float64Array", nw);
  auto bias = Typed<Napi::Float64Array>(info, 1, "bias", napi_float64_array, "Float64Array", classes);
  auto velocity_w = Typed<Napi::Float64Array>(info, 2, "velocityW", napi_float64_array, "Float64Array", nw);
  auto velocity_b = Typed<Napi::Float64Array>(info, 3, "velocityB", napi_float64_array, "Float64Array", classes);
  auto x = Typed<Napi::Float32Array>(info, 4, "x", napi_float32_array, "Float32Array", 0);
  auto rows = Typed<Napi::Int32Array>(info, 5, "rows", napi_int32_array, "Int32Array", 0);
  const auto start = static_cast<int64_t>(Number(info, 6, "start", 0, double(rows.ElementLength()), true));
  const auto count = static_cast<int64_t>(Number(info, 7, "count", 0, double(rows.ElementLength() - start), true));
  auto labels = Typed<Napi::Int32Array>(info, 8, "labels", napi_int32_array, "Int32Array", 0);
  const double lr = Number(info, 11, "lr", 0, 1e6, false);
  const double momentum = Number(info, 12, "momentum", 0, 1, false);
  Napi::Value nesterov = info.Length() > 13 ? info[13] : env.Undefined();
  if (!nesterov.IsBoolean()) ThrowExpected(env, "nesterov", "boolean", nesterov);
  const double weight_decay = Number(info, 14, "weightDecay", 0, 1e6, false);
  if (x.ElementLength() % dim != 0) ThrowExpected(env, "x", "Float32Array of whole rows of dim values", info[4]);
  const int64_t n = static_cast<int64_t>(x.ElementLength()) / dim;
  // Rows index both x and labels (labels may be shorter than x: a reused buffer's last batch).
  const int64_t usable = std::min<int64_t>(n, static_cast<int64_t>(labels.ElementLength()));
  for (int64_t r = start; r < start + count; ++r) {
    const int32_t row = rows[r];
    if (row < 0 || row >= usable)
      throw Napi::RangeError::New(env, "Expected rows in [0, " + std::to_string(usable) + ") (rows of x with a label) but found " +
                                           std::to_string(row) + " at index " + std::to_string(r));
    if (labels[row] < 0 || labels[row] >= classes)
      throw Napi::RangeError::New(env, "Expected labels in [0, " + std::to_string(classes) + ") but found " +
                                           std::to_string(labels[row]) + " at index " + std::to_string(row));
  }
  const byol::cpu::SgdLinearState state{weights.Data(), bias.Data(), velocity_w.Data(), velocity_b.Data(), dim, classes};
  double loss = 0;
  try {
    RunOnComputeThread([&] {
      loss = byol::cpu::sgd_linear_step(state, x.Data(), rows.Data(), start, count, labels.Data(), lr, momentum,
                                        nesterov.As<Napi::Boolean>().Value(), weight_decay);
    });
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "sgdLinearStep: out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("sgdLinearStep: ") + e.what());
  }
  return Napi::Number::New(env, loss);
}

}  // namespace

void InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("sgdLinearStep", Napi::Function::New(env, SgdLinearStep, "sgdLinearStep"));
}

}  // namespace byol_addon
