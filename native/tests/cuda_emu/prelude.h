// prelude.h: first include of every file built against the kernel emulator (rewrite.cmake puts
// it at the top of each rewritten kernels/*.cu). It pulls in the headers that name the token
// `cuda` (byol::DeviceType::cuda, the runner's Context::cuda), then renames the namespace byol::cuda to byol::cuda_emu for
// the rest of the file, so the emulated kernels never share a symbol with libbyol_cuda.so,
// which the same test runner loads on a GPU machine.
#pragma once
#include <cuda_runtime.h>

#include "byol/augment.h"
#include "byol/backend.h"
#include "byol/error.h"
#include "emu.h"
#include "runner.h"  // the test runner's headers (test_emu.cu), which name ctx.cuda

#define cuda cuda_emu
