// cuda_runtime.h (kernel emulator): what native/cuda/kernels/*.cu use of the CUDA runtime and
// language, for compiling those kernels with the host compiler and running them on the CPU
// (emu.h). Only the emulator's build puts this folder on the include path, ahead of any CUDA
// toolkit, so the kernels' `#include <cuda_runtime.h>` lands here.
// Contract: rewrite.cmake turns each `__shared__ T a[N];` into a reference to the running
// block's slot for that declaration (block_shared below; fresh NaN bytes in every block, a
// guard page right after it), so __shared__ itself is left undefined: a header that used it
// would not compile here;
// threadIdx/blockIdx/blockDim/gridDim are set by the scheduler before it resumes a thread;
// __syncthreads and __shfl_xor_sync suspend the calling thread (emu.cc). Device-only math
// (__CUDA_ARCH__ paths) is not defined here: headers that branch on it take their host path.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

typedef struct CUstream_st* cudaStream_t;

// The runtime's numbering for the codes the backend names (and the simulated runtime of
// ../cuda_sim returns).
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureWrongThread = 908,
};

struct cudaFuncAttributes {
  int maxThreadsPerBlock = 1024;
};

cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t status);
const char* cudaGetErrorString(cudaError_t status);
namespace byol_emu {
// What cudaFuncGetAttributes answers (cudaSuccess unless the simulated runtime of ../cuda_sim
// plays a GPU the kernels were not built for).
cudaError_t kernel_image_status();
}  // namespace byol_emu
template <typename Kernel>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, Kernel) {
  *attributes = cudaFuncAttributes{};
  return byol_emu::kernel_image_status();
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

namespace byol_emu {
void syncthreads();
// Exchanges 8 bytes with lane (this lane ^ lane_mask) of the calling warp.
uint64_t shfl_xor_bits(unsigned mask, uint64_t bits, int lane_mask);
// The running block's memory for the __shared__ declaration `site` (one address per
// declaration and block; filled with 0xFF bytes when the block first asks for it).
void* shared_slot(const void* site, size_t bytes, size_t align);
template <typename T>
T& block_shared(const void* site) {
  return *static_cast<T*>(shared_slot(site, sizeof(T), alignof(T)));
}
}  // namespace byol_emu

inline void __syncthreads() { byol_emu::syncthreads(); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "__shfl_xor_sync: 8-byte values at most");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = byol_emu::shfl_xor_bits(mask, bits, lane_mask);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// CUDA's overloaded min/max of device code.
inline int min(int a, int b) { return b < a ? b : a; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return b < a ? b : a; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return b < a ? b : a; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline long min(long a, long b) { return b < a ? b : a; }
inline long max(long a, long b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// A real atomic, so the race check (ThreadSanitizer over the fibers, emu.h) sees one.
inline unsigned atomicOr(unsigned* address, unsigned value) {
  return __atomic_fetch_or(address, value, __ATOMIC_RELAXED);
}
