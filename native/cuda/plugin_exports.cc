// plugin_exports.cc: the two C symbols of libbyol_cuda.so (plugin.h). Everything else in the
// library is hidden (-fvisibility=hidden), so the plugin cannot clash with the core's symbols.
// Contract: byol_cuda_create never throws across the C boundary; on failure it returns null
// and writes the reason (no driver, no GPU, index out of range, ...) into `err`.
#include <cstring>
#include <exception>

#include "byol/backend.h"
#include "cuda_backend.h"

#define BYOL_EXPORT extern "C" __attribute__((visibility("default")))

BYOL_EXPORT int byol_cuda_api_version(void) { return byol::kBackendApiVersion; }

BYOL_EXPORT byol::Backend* byol_cuda_create(int device, char* err, size_t err_len) {
  auto report = [&](const char* message) {
    if (err != nullptr && err_len > 0) {
      std::strncpy(err, message, err_len - 1);
      err[err_len - 1] = '\0';
    }
  };
  try {
    return new byol::cuda::CudaBackend(device);
  } catch (const std::exception& e) {
    report(e.what());
  } catch (...) {
    report("cuda: unknown error while creating the CUDA backend");
  }
  return nullptr;
}
