// kernels.h: host launchers of the CUDA backend's own kernels (kernels/*.cu).
// Contract (llm.c style): outputs first, then inputs, then sizes, then the stream. Same
// semantics as the byol::Backend op of the same name (backend.h); activation gradients are
// written (=), parameter gradients are added when `accumulate`. Launchers only enqueue work
// and check the launch; the caller has validated the sizes. Pointers are device pointers.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../../core/optim_math.h"

namespace byol {
namespace cuda {

// Bits of the device status word: a kernel that finds bad data (a label outside [0, K))
// cannot throw, so it writes NaN where the result would be and ORs one of these bits; the
// backend reads the word at its next synchronize/download and throws.
enum DeviceStatusBits : unsigned {
  kStatusCrossEntropyForwardLabel = 1u << 0,
  kStatusCrossEntropyBackwardLabel = 1u << 1,
};

// Whether this library holds machine code or PTX that runs on the current device.
cudaError_t probe_kernel_image();

// ---- elementwise (kernels/elementwise.cu) ----
void fill(float* dst, float value, size_t n, cudaStream_t stream);
void relu_forward(float* out, const float* inp, size_t n, cudaStream_t stream);
void relu_backward(float* dinp, const float* dout, const float* out, size_t n, cudaStream_t stream);
void add(float* out, const float* a, const float* b, size_t n, cudaStream_t stream);
void accumulate(float* dst, const float* src, size_t n, cudaStream_t stream);
void ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device,
                cudaStream_t stream);
// out (B, O) = bias broadcast over rows.
void broadcast_rows(float* out, const float* bias, int B, int O, cudaStream_t stream);
// out (batches, C) (+)= scale * sum over `rows` of inp (batches, rows, C): bias gradients
// (batches = 1) and global average pooling (scale = 1/rows).
void reduce_rows(float* out, const float* inp, int batches, int64_t rows, int C, float scale,
                 bool accumulate, cudaStream_t stream);
// Conv weights: OIHW (K, C, R, S) <-> KRSC (K, R, S, C), the layout cuDNN pairs with NHWC.
void oihw_to_krsc(float* dst, const float* src, int K, int C, int R, int S, cudaStream_t stream);
void krsc_to_oihw(float* dst, const float* src, int K, int C, int R, int S, bool accumulate,
                  cudaStream_t stream);

// ---- batch norm over (M, C) rows (kernels/batchnorm.cu) ----
// How many row chunks the per-channel reductions split M into; `scratch_floats` tells how
// many floats of scratch the forward/backward need for that split.
struct BatchNormSplit {
  int chunks = 1;
  int64_t rows_per_chunk = 0;
  size_t forward_scratch_floats(int C) const;
  size_t backward_scratch_floats(int C) const;
};
BatchNormSplit batchnorm_split(int64_t M, int C, int num_sms);
// The forwards apply the epilogue out = relu(bn(x) + residual) (residual may be null; relu
// as relu_forward, NaN passes); the backward masks dout by relu_out > 0 when relu_out is set.
void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd, float* running_mean,
                             float* running_var, float* scratch, const float* inp,
                             const float* gamma, const float* beta, int64_t M, int C,
                             float momentum, float eps, const float* residual, bool relu,
                             const BatchNormSplit& split, cudaStream_t stream);
void batchnorm_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, int64_t M,
                            int C, float eps, const float* residual, bool relu, cudaStream_t stream);
void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, float* scratch,
                        const float* dout, const float* inp, const float* save_mean,
                        const float* save_rstd, const float* gamma, const float* relu_out, int64_t M,
                        int C, bool accumulate, const BatchNormSplit& split, cudaStream_t stream);

// ---- pooling (kernels/pooling.cu) ----
void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, int N, int H, int W, int C,
                       int kernel, int stride, int pad, int P, int Q, cudaStream_t stream);
void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax, int N, int H,
                        int W, int C, int kernel, int stride, int pad, int P, int Q,
                        cudaStream_t stream);
void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C, cudaStream_t stream);

// ---- losses (kernels/losses.cu); `row_scratch` holds B floats ----
void byol_loss_forward(float* loss, float* row_scratch, const float* p, const float* z, int B,
                       int D, bool accumulate, cudaStream_t stream);
void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B, int D,
                        cudaStream_t stream);
void cross_entropy_forward(float* loss, float* probs, float* row_scratch, unsigned* status,
                           const float* logits, const int32_t* labels, int B, int K,
                           cudaStream_t stream);
void cross_entropy_backward(float* dlogits, unsigned* status, const float* probs,
                            const int32_t* labels, float dloss, int B, int K,
                            cudaStream_t stream);

// ---- optimizer updates over flat buffers (kernels/optim.cu) ----
// A ParamSegment table as the kernels read it (built once per table by optim.cc): the segments
// cut into chunks of at most kOptimChunkFloats floats that never cross a segment, one block per
// chunk, and per segment the range of its chunks. `decay` is ParamSegment::decay.
constexpr int64_t kOptimChunkFloats = 4096;  // 16 floats per thread of a 256-thread block
struct OptimChunk {
  int64_t begin;    // absolute float offset
  int32_t size;     // 1..kOptimChunkFloats
  int32_t segment;  // index into the OptimSegment table
};
struct OptimSegment {
  int32_t first_chunk, num_chunks;
  int32_t decay;
};
// Host: cuts `segments` into chunks and per-segment chunk ranges (what the kernels read), in
// segment order. Throws when the chunk count exceeds the kernels' int index.
void cut_segments(const ParamSegment* segments, int num_segments, std::vector<OptimChunk>* chunks,
                  std::vector<OptimSegment>* ranges);
// LARS: chunk sums of squares, then per-segment trust ratios, then the update. `scratch` holds
// lars_scratch_bytes(num_chunks, num_segments) bytes.
size_t lars_scratch_bytes(int num_chunks, int num_segments);
void lars_update(float* params, float* momentum, void* scratch, const float* grads, const OptimChunk* chunks,
                 int num_chunks, const OptimSegment* segments, int num_segments, const LarsOptions& opt,
                 cudaStream_t stream);
// momentum may be null when opt.momentum == 0.
void sgd_update(float* params, float* momentum, const float* grads, const OptimChunk* chunks, int num_chunks,
                const OptimSegment* segments, const SgdOptions& opt, cudaStream_t stream);
void adamw_update(float* params, float* exp_avg, float* exp_avg_sq, const float* grads, const OptimChunk* chunks,
                  int num_chunks, const OptimSegment* segments, const optim::AdamWConstants& constants,
                  cudaStream_t stream);

// ---- augmentation (kernels/augment.cu) ----
// out (N, out_h, out_w, C) float: the normalized views of images (N, H, W, C) uint8 under
// params (N device structs, validated). blur_taps + n * taps_stride holds sample n's Gaussian
// taps (core/augment_math.h gaussian_taps) along height, then width, for samples with blur.
// Scratch: means (3N floats), blur_scratch (N*out_h*out_w*C floats; may be null unless any_blur).
// Host: the device argument block of one augment call: [N AugmentParams | N * taps_stride blur
// taps] (`staged_bytes`, filled by stage_augment_args from host memory), then 3N floats of
// channel means the kernels write (`total_bytes` in all). taps_stride is the widest blurring
// sample's blur_size_h + blur_size_w (0 without blur).
struct AugmentArgs {
  bool any_jitter = false, any_blur = false;
  int taps_stride = 0;
  size_t params_bytes = 0, staged_bytes = 0, total_bytes = 0;
};
AugmentArgs augment_args(const AugmentParams* params, int N);
// Writes the staged part (params, then each blurring sample's taps from the host's exp, as on
// the CPU backend, zeros elsewhere) to `host` (staged_bytes bytes).
void stage_augment_args(void* host, const AugmentParams* params, int N, const AugmentArgs& args);
void augment(float* out, float* means, float* blur_scratch, const uint8_t* images, const AugmentParams* params,
             const float* blur_taps, int taps_stride, int N, int H, int W, int C, int out_h, int out_w,
             bool any_jitter, bool any_blur, cudaStream_t stream);

}  // namespace cuda
}  // namespace byol
