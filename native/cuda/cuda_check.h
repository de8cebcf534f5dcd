// cuda_check.h: status checks and per-op scopes shared by every file of the CUDA backend.
// Contract: each CUDA runtime call goes through BYOL_CUDA_CHECK, which throws byol::Error
// naming the op being run (set by OpScope), the failing call, the runtime's error name and
// string, and file:line. Kernel launches are followed by BYOL_CUDA_CHECK_LAUNCH().
// Errors of asynchronous work surface at the next checked call, under that call's op name.
#pragma once
#include <cuda_runtime.h>

#include "byol/error.h"

namespace byol {
namespace cuda {

// The op this thread is running ("conv2d_forward"), or "cuda" outside any op.
const char* current_op();

// Names the op for error messages and marks it as an NVTX range (nsys timelines).
class OpScope {
 public:
  explicit OpScope(const char* op);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* previous_;
};

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line);

}  // namespace cuda
}  // namespace byol

#define BYOL_CUDA_CHECK(call)                                                   \
  do {                                                                          \
    cudaError_t byol_status_ = (call);                                          \
    if (byol_status_ != cudaSuccess)                                            \
      ::byol::cuda::throw_cuda_error(byol_status_, #call, __FILE__, __LINE__);  \
  } while (0)

// After a <<<...>>> launch: reports bad launch configurations (and earlier async faults).
#define BYOL_CUDA_CHECK_LAUNCH() BYOL_CUDA_CHECK(cudaGetLastError())
