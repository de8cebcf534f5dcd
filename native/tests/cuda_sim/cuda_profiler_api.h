// cuda_profiler_api.h (simulated GPU): the profiler window calls, which only count here.
#pragma once
#include "cuda_runtime.h"

cudaError_t cudaProfilerStart();
cudaError_t cudaProfilerStop();
