// validate.cc: argument errors shared by the addon's bindings (see addon.h).
#include <cmath>
#include <sstream>

#include "addon.h"

namespace byol_addon {

void ThrowExpected(Napi::Env env, const std::string& name, const std::string& expected,
                   const Napi::Value& value) {
  std::ostringstream os;
  os << "Expected " << expected << " for " << name << " but received ";
  if (value.IsNumber()) {
    os.precision(17);
    os << value.As<Napi::Number>().DoubleValue() << " of type number";
  } else if (value.IsString()) {
    os << '"' << value.As<Napi::String>().Utf8Value() << "\" of type string";
  } else if (value.IsBoolean()) {
    os << (value.As<Napi::Boolean>().Value() ? "true" : "false") << " of type boolean";
  } else if (value.IsUndefined()) {
    os << "undefined of type undefined";
  } else if (value.IsNull()) {
    os << "null of type null";
  } else {
    os << "a value of type " << (value.IsArray() ? "array" : value.IsBigInt() ? "bigint" : "object");
  }
  throw Napi::TypeError::New(env, os.str());
}

double ArgNumber(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  if (!v.IsNumber()) ThrowExpected(info.Env(), name, "number", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < lo || d > hi) {
    std::ostringstream expected;
    expected << "number between " << lo << " and " << hi;
    ThrowExpected(info.Env(), name, expected.str(), v);
  }
  return d;
}

int64_t ArgInteger(const Napi::CallbackInfo& info, size_t i, const char* name, double lo, double hi) {
  const double d = ArgNumber(info, i, name, lo, hi);
  if (std::floor(d) != d) ThrowExpected(info.Env(), name, "integer", info[i]);
  return static_cast<int64_t>(d);
}

Napi::TypedArray ArgTypedArray(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type,
                               const char* type_name, size_t length) {
  Napi::Value v = info.Length() > i ? info[i] : info.Env().Undefined();
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) ThrowExpected(info.Env(), name, type_name, v);
  Napi::TypedArray array = v.As<Napi::TypedArray>();
  if (length != 0 && array.ElementLength() != length)
    ThrowExpected(info.Env(), name, std::string(type_name) + " of " + std::to_string(length) + " values", v);
  return array;
}

}  // namespace byol_addon
