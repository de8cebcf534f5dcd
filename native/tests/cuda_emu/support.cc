// support.cc: what the emulated kernels link against from native/cuda/cuda_check.cc (the op
// name in error messages and the runtime error thrower), without NVTX.
#include "prelude.h"
#include "cuda_check.h"

namespace byol {
namespace cuda {

const char* current_op() { return "emulated kernel"; }

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  (void)cudaGetLastError();
  detail::throw_error(file, line, "cuda (emulated): ", call, " failed: ", cudaGetErrorName(status), ": ",
                      cudaGetErrorString(status));
}

}  // namespace cuda
}  // namespace byol
