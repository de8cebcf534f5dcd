// addon.cc: module entry of byol.node; registers each feature's bindings.
#include "addon.h"

namespace byol_addon {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InitTensor(env, exports);
  InitDevice(env, exports);
  InitAugment(env, exports);
  InitImage(env, exports);
  InitKnn(env, exports);
  InitProbe(env, exports);
  InitModel(env, exports);
  return exports;
}

}  // namespace byol_addon

// NODE_API_MODULE pastes its argument into an identifier, so it needs an unqualified name.
static Napi::Object InitByol(Napi::Env env, Napi::Object exports) {
  return byol_addon::InitModule(env, exports);
}

NODE_API_MODULE(byol, InitByol)
