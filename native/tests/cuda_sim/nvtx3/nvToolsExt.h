// nvtx3/nvToolsExt.h (simulated GPU): NVTX ranges. The simulator keeps each thread's range
// depth (sim_runtime.cc), so a pop without its push shows as a negative depth.
#pragma once

int nvtxRangePushA(const char* message);
int nvtxRangePop();
