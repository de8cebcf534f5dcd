// addon.cc: module entry of byol.node; registers each feature's bindings.
#include "addon.h"

namespace byol_addon {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InitTensor(env, exports);
  InitDevice(env, exports);
  return exports;
}

}  // namespace byol_addon

NODE_API_MODULE(byol, byol_addon::InitModule)
