// validate.cc: argument errors shared by the addon's bindings (see addon.h).
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

}  // namespace byol_addon
