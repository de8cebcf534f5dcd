// sim_prelude.h: first include of every native/cuda/kernels/*.cu rewritten for the simulated
// plugin (cuda_emu/rewrite.cmake -DPRELUDE=sim_prelude.h). Unlike the emulator's prelude.h it
// keeps the namespace byol::cuda: these kernels are the plugin's own, linked with the backend
// sources that call them.
#pragma once
#include <cuda_runtime.h>

#include "emu.h"
