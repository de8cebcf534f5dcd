// cuda_check.cc: the op-name scope (with its NVTX range) and the CUDA runtime error thrower
// of cuda_check.h. Contract: messages read "cuda: <op>: <call> failed: <error name>: <error
// string> (file:line)", so a user sees which layer of the step broke and why.
#include "cuda_check.h"

#include <nvtx3/nvToolsExt.h>

namespace byol {
namespace cuda {
namespace {
thread_local const char* t_current_op = nullptr;
}

const char* current_op() { return t_current_op ? t_current_op : "cuda"; }

OpScope::OpScope(const char* op) : previous_(t_current_op) {
  t_current_op = op;
  nvtxRangePushA(op);
}

OpScope::~OpScope() {
  nvtxRangePop();
  t_current_op = previous_;
}

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  // Clears a non-sticky error so that it is not reported again by the next launch check.
  (void)cudaGetLastError();
  const char* hint = "";
  if (status == cudaErrorMemoryAllocation)
    hint = " (out of GPU memory: use a smaller batch or image size)";
  else if (status == cudaErrorIllegalAddress || status == cudaErrorLaunchFailure)
    hint = " (the GPU context is now unusable: restart the process; run under compute-sanitizer to find the kernel)";
  else if (status == cudaErrorNoKernelImageForDevice)
    hint = " (libbyol_cuda.so has no code for this GPU: rebuild it with its architecture in CMAKE_CUDA_ARCHITECTURES)";
  detail::throw_error(file, line, "cuda: ", current_op(), ": ", call, " failed: ", cudaGetErrorName(status),
                      ": ", cudaGetErrorString(status), hint);
}

}  // namespace cuda
}  // namespace byol
