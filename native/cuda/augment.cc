// augment.cc: the CUDA backend's Backend::augment: the CPU backend's argument checks
// (core/augment_math.h, messages prefixed "cuda: "), the host parameter array and its blur taps
// copied into pinned staging and uploaded asynchronously, scratch from the stream-ordered pool,
// then kernels/augment.cu on the stream. Contract: backend.h / byol/augment.h; the caller's
// params array is free when the call returns, and nothing waits for the GPU (except a full
// staging ring, see StagingRing in cuda_backend.h).
#include <algorithm>
#include <cstring>

#include "../core/augment_math.h"
#include "cuda_backend.h"
#include "kernels/kernels.h"

namespace byol {
namespace cuda {
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
    StagingRing::Slot& slot = augment_staging_.acquire(layout.staged_bytes);
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
