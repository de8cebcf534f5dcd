// probe.cc: sgdLinearStep(weights, bias, velocityW, velocityB, x, rows, start, count, labels, dim,
// classes, lr, momentum, nesterov, weightDecay) -> the summed cross-entropy of the rows before
// the update: one minibatch step of the linear probe (native/cpu/linear_probe.h), synchronous,
// run on the compute thread (the probe calls it from a worker thread). The four state arrays
// are updated in place.
#include <algorithm>
#include <string>

#include "../cpu/linear_probe.h"
#include "addon.h"

namespace byol_addon {
namespace {

Napi::Value SgdLinearStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t dim = ArgInteger(info, 9, "dim", 1, 1 << 24);
  const auto classes = static_cast<int>(ArgInteger(info, 10, "classes", 1, 1 << 20));
  const size_t nw = static_cast<size_t>(dim) * classes;
  auto weights = ArgTypedArray(info, 0, "weights", napi_float64_array, "Float64Array", nw).As<Napi::Float64Array>();
  auto bias = ArgTypedArray(info, 1, "bias", napi_float64_array, "Float64Array", classes).As<Napi::Float64Array>();
  auto velocity_w = ArgTypedArray(info, 2, "velocityW", napi_float64_array, "Float64Array", nw).As<Napi::Float64Array>();
  auto velocity_b = ArgTypedArray(info, 3, "velocityB", napi_float64_array, "Float64Array", classes).As<Napi::Float64Array>();
  auto x = ArgTypedArray(info, 4, "x", napi_float32_array, "Float32Array").As<Napi::Float32Array>();
  auto rows = ArgTypedArray(info, 5, "rows", napi_int32_array, "Int32Array").As<Napi::Int32Array>();
  const int64_t start = ArgInteger(info, 6, "start", 0, double(rows.ElementLength()));
  const int64_t count = ArgInteger(info, 7, "count", 0, double(rows.ElementLength() - start));
  auto labels = ArgTypedArray(info, 8, "labels", napi_int32_array, "Int32Array").As<Napi::Int32Array>();
  const double lr = ArgNumber(info, 11, "lr", 0, 1e6);
  const double momentum = ArgNumber(info, 12, "momentum", 0, 1);
  Napi::Value nesterov = info.Length() > 13 ? info[13] : env.Undefined();
  if (!nesterov.IsBoolean()) ThrowExpected(env, "nesterov", "boolean", nesterov);
  const double weight_decay = ArgNumber(info, 14, "weightDecay", 0, 1e6);
  if (x.ElementLength() % dim != 0) ThrowExpected(env, "x", "Float32Array of whole rows of dim values", info[4]);
  const int64_t n = static_cast<int64_t>(x.ElementLength()) / dim;
  // Rows index both x and labels (labels may be shorter than x: a reused buffer's last batch).
  const int64_t usable = std::min<int64_t>(n, static_cast<int64_t>(labels.ElementLength()));
  for (int64_t r = start; r < start + count; ++r) {
    const int32_t row = rows[static_cast<size_t>(r)];
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
