// augment.cc: the CUDA backend's Backend::augment: the CPU backend's argument checks
// (core/augment_math.h, messages prefixed "cuda: "), the host parameter array and its blur taps
// copied into pinned staging and uploaded asynchronously, scratch from the stream-ordered pool,
// then kernels/augment.cu on the stream. Contract: backend.h / byol/augment.h; the caller's
// params array is free when the call returns, and nothing waits for the GPU (except a full
// staging ring, see AugmentStaging in cuda_backend.h).
#include <algorithm>
#include <cstring>

#include "../core/augment_math.h"
#include "cuda_backend.h"
#include "kernels/kernels.h"

namespace byol {
namespace cuda {
namespace {

// In-flight augment calls the host may run ahead by before one waits: a step augments two
// views, and the host rarely gets more than a couple of steps ahead.
constexpr size_t kMaxStagingSlots = 8;
constexpr size_t kMinStagingBytes = size_t(64) << 10;

}  // namespace

CudaBackend::AugmentStaging::Slot& CudaBackend::AugmentStaging::acquire(size_t bytes) {
  // Fixed capacity: `Slot&` handed out stays valid while more slots are added.
  if (slots.capacity() < kMaxStagingSlots) slots.reserve(kMaxStagingSlots);
  Slot* chosen = nullptr;
  for (Slot& slot : slots) {
    const cudaError_t status = cudaEventQuery(slot.done);
    if (status == cudaErrorNotReady) continue;  // its copy has not run yet
    BYOL_CUDA_CHECK(status);
    if (!chosen || (chosen->bytes < bytes && slot.bytes >= bytes)) chosen = &slot;
  }
  if (!chosen && slots.size() < kMaxStagingSlots) {
    Slot slot;
    BYOL_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    slots.push_back(slot);
    chosen = &slots.back();
  }
  if (!chosen) {
    chosen = &*std::min_element(slots.begin(), slots.end(),
                                [](const Slot& a, const Slot& b) { return a.last_use < b.last_use; });
    BYOL_CUDA_CHECK(cudaEventSynchronize(chosen->done));
  }
  if (chosen->bytes < bytes) {
    if (chosen->host) BYOL_CUDA_CHECK(cudaFreeHost(chosen->host));
    chosen->host = nullptr;
    chosen->bytes = 0;
    size_t want = kMinStagingBytes;
    while (want < bytes) want *= 2;
    BYOL_CUDA_CHECK(cudaHostAlloc(&chosen->host, want, cudaHostAllocDefault));
    chosen->bytes = want;
  }
  chosen->last_use = ++clock;
  return *chosen;
}

CudaBackend::AugmentStaging::~AugmentStaging() {
  // Runs after teardown() synchronized the stream; destructors cannot report failures.
  for (Slot& slot : slots) {
    if (slot.done) {
      cudaEventSynchronize(slot.done);
      cudaEventDestroy(slot.done);
    }
    if (slot.host) cudaFreeHost(slot.host);
  }
  (void)cudaGetLastError();
}

void CudaBackend::augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W,
                          int C, int out_h, int out_w) {
  BYOL_CUDA_OP("augment");
  // Its parameters go through pinned staging slots that are reused: a replay would read
  // whatever a later call left there.
  refuse_in_capture("stages its parameters through reused host memory");
  if (!augment_math::check_augment_args("cuda: ", out, images, params, N, H, W, C, out_h, out_w)) return;

  const AugmentArgs layout = augment_args(params, N);
  DeviceBuffer args(this, layout.total_bytes);
  char* device_args = static_cast<char*>(args.data());
  {
    std::lock_guard<std::mutex> lock(augment_staging_.mutex);
    AugmentStaging::Slot& slot = augment_staging_.acquire(layout.staged_bytes);
    stage_augment_args(slot.host, params, N, layout);
    BYOL_CUDA_CHECK(cudaMemcpyAsync(device_args, slot.host, layout.staged_bytes, cudaMemcpyHostToDevice, stream_));
    BYOL_CUDA_CHECK(cudaEventRecord(slot.done, stream_));
  }
  DeviceBuffer blur_scratch;
  if (layout.any_blur) blur_scratch = DeviceBuffer(this, size_t(N) * out_h * out_w * C * sizeof(float));
  cuda::augment(out, reinterpret_cast<float*>(device_args + layout.staged_bytes), blur_scratch.f32(), images,
                reinterpret_cast<const AugmentParams*>(device_args),
                reinterpret_cast<const float*>(device_args + layout.params_bytes), layout.taps_stride, N, H, W, C,
                out_h, out_w, layout.any_jitter, layout.any_blur, stream_);
}

}  // namespace cuda
}  // namespace byol
