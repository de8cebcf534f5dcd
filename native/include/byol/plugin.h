// plugin.h: the run-time boundary between the core and the CUDA backend library.
// libbyol_cuda.so is built separately (CMake, nvcc) and never linked into byol.node; the
// core dlopen()s it when a GPU is asked for, so a machine without CUDA still loads the
// addon and gets a clear error only when it asks for 'cuda'.
// The library exports two C symbols:
//   int byol_cuda_api_version(void);            // must equal kBackendApiVersion
//   byol::Backend* byol_cuda_create(int device, char* err, size_t err_len);
//       returns null and writes a message naming what is missing (driver, GPU, cuDNN...)
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "byol/backend.h"

namespace byol {

struct CudaLoadReport {
  std::vector<std::string> tried;  // every path tried, with why it failed
  std::string loaded_path;         // empty when nothing loaded
};

// Where the plugin is looked for, in order: $BYOL_CUDA_LIBRARY, then next to the module
// that contains this code (the addon or the test runner), then build/ folders, then the
// plain name through the dynamic loader's search path.
std::vector<std::string> cuda_library_candidates();

// Loads the plugin and creates the backend for GPU `device`. Throws byol::Error listing
// each path tried and why it failed (not found, wrong API version, no driver, no GPU).
std::unique_ptr<Backend> load_cuda_backend(int device = 0, CudaLoadReport* report = nullptr);

}  // namespace byol
