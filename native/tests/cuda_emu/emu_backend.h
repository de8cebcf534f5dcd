// emu_backend.h: a byol::Backend whose ops run the CUDA backend's own kernels
// (native/cuda/kernels/*.cu) under the kernel emulator (emu.h), so the test runner can check
// them on a machine without a GPU ("@emu" cases). Convolutions and GEMMs, which the CUDA
// backend leaves to cuDNN and cuBLAS, go to the CPU backend `reference`, wrapped in the same
// kernels the CUDA backend puts around them (OIHW <-> KRSC weight reorders, bias broadcast and
// bias-gradient row sums).
// Contract: each op makes the launcher calls CudaBackend makes (same scratch sizes, the batch
// norm split for `num_sms` multiprocessors, the same optimizer chunk tables and augment
// argument block). Memory is host memory between guard pages, filled with NaN bytes when
// allocated (as cudaMalloc gives garbage), so an out-of-bounds access crashes with the
// kernel, block and thread named, and a read of memory nothing wrote shows as NaN.
#pragma once
#include <functional>
#include <memory>

#include "byol/backend.h"

namespace byol_test {

std::unique_ptr<byol::Backend> make_emu_backend(byol::Backend* reference, int num_sms = 132);

// Runs `fn` with the emulator's blocks and threads scheduled in reverse index order (emu.h),
// restoring the forward order after.
void with_reverse_schedule(const std::function<void()>& fn);

}  // namespace byol_test
