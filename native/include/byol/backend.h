// backend.h: the device interface every op of the BYOL step goes through.
// Contract (llm.c style): outputs first, then inputs, then sizes. All float tensors are
// fp32, contiguous, row-major. Images are NHWC; conv weights are OIHW (PyTorch layout, so
// weights interchange without copies); linear weights are [out, in].
// Gradient convention: activation gradients are written (=); parameter gradients
// (dweight, dbias, dgamma, dbeta) are written when accumulate == false and added (+=)
// when accumulate == true, because the online network runs once per view and both views'
// gradients sum into one buffer.
// Pointers are device pointers of this backend (host memory for the CPU backend).
// A backend that lacks an op throws byol::NotSupported (tests report "not supported").
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "byol/error.h"

namespace byol {

// Bumped whenever the Backend vtable or a struct below changes; the CUDA plugin is built
// separately and loaded at run time, and a mismatch is refused with both numbers.
// 2: profiling hooks (range_push/range_pop, profiler_start/profiler_stop).
// 3: step scalars read from backend memory (lr_device, bias_device, ema_update's tau_device),
//    graph capture (begin_capture/end_capture, Graph), batch norm epilogues (BnEpilogue,
//    batchnorm_backward's relu_out).
// 4: op timing (set_op_timing, op_times, OpTime).
constexpr int kBackendApiVersion = 4;

enum class DeviceType { cpu = 0, cuda = 1 };
const char* device_name(DeviceType d);

class NotSupported : public Error {
 public:
  explicit NotSupported(const std::string& what) : Error(what) {}
};

// 2-D convolution without bias. inp (N,H,W,C) NHWC, weight (K,C,R,S) OIHW,
// out (N,P,Q,K) with P = (H + 2*pad - R)/stride + 1, Q likewise.
struct ConvShape {
  int N = 0, H = 0, W = 0, C = 0;  // input
  int K = 0, R = 0, S = 0;         // output channels, kernel height, width
  int stride = 1, pad = 0;
  int P() const { return (H + 2 * pad - R) / stride + 1; }
  int Q() const { return (W + 2 * pad - S) / stride + 1; }
};

// Max pooling, square window. inp (N,H,W,C), out (N,P,Q,C).
struct PoolShape {
  int N = 0, H = 0, W = 0, C = 0;
  int kernel = 3, stride = 2, pad = 1;
  int P() const { return (H + 2 * pad - kernel) / stride + 1; }
  int Q() const { return (W + 2 * pad - kernel) / stride + 1; }
};

// One parameter tensor inside a flat parameter buffer. `decay` false marks biases and
// BatchNorm parameters: LARS gives them neither weight decay nor the trust ratio (BYOL.md),
// AdamW/SGD no weight decay.
struct ParamSegment {
  int64_t offset = 0;  // in floats
  int64_t size = 0;
  bool decay = true;
};

// The values that change every step (lr; AdamW's bias corrections) may instead be read from
// backend memory when the update runs: a captured graph (Backend::begin_capture) replays with
// its arguments frozen, so the step writes them to memory before each launch. When lr_device
// is set, `lr` is ignored; when bias_device is set, `step` is ignored. Values read from memory
// are the caller's to check (the CUDA backend cannot see them without a host sync).
struct LarsOptions {
  float lr = 0, weight_decay = 0, momentum = 0.9f, trust_coefficient = 1e-3f;
  float eps = 0;             // 0 = the reference implementation (no epsilon)
  bool solo_learn = false;   // trust = eta*|p| / (|g| + wd*|p| + eps), skip every 1-D tensor
  const float* lr_device = nullptr;  // 1 float
};
struct SgdOptions {
  float lr = 0, weight_decay = 0, momentum = 0.9f;
  bool nesterov = false;
  const float* lr_device = nullptr;  // 1 float
};
struct AdamWOptions {
  float lr = 0, weight_decay = 0, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t step = 1;  // 1-based step for bias correction
  const float* lr_device = nullptr;    // 1 float
  const float* bias_device = nullptr;  // 2 floats: 1 - beta1^step, sqrt(1 - beta2^step)
                                       // (optim::adamw_bias computes them on the host)
};

// A recorded sequence of ops (Backend::end_capture): launch() enqueues all of them again,
// with the pointers and scalar arguments they were recorded with, in recorded order. Launches
// are stream-ordered with the backend's other ops. Destroying a graph while a launch is in
// flight is safe (the backend releases it when the launch completes).
class Graph {
 public:
  virtual ~Graph() = default;
  virtual void launch() = 0;
};

// What a batch norm forward applies after normalizing (Backend::batchnorm_forward_*).
struct BnEpilogue {
  const float* residual = nullptr;  // (M, C), added when set (a residual block's shortcut)
  bool relu = false;
};

struct AugmentParams;  // byol/augment.h

// One row of an op-time profile (Backend::op_times): the phase of the step the op ran in
// ("online forward", "backward", ...; see native/core/op_timer.h), the op
// ("conv2d_forward"), how many calls and their summed time in milliseconds, and their nominal
// work: floating-point operations of the convolutions and linear layers (2 per multiply-add),
// bytes of the tensors the other ops read and write (each once per pass over them); 0 where
// an op does not say. Work / time is the rate to hold against the machine's peak.
struct OpTime {
  std::string phase, op;
  int64_t calls = 0;
  double ms = 0;
  double flops = 0, bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceType type() const = 0;
  // One line: what this backend runs on ("cpu: AMD EPYC, 2 threads, oneDNN 2.6.3").
  virtual std::string describe() const = 0;

  // ---- memory ----
  virtual void* alloc(size_t bytes) = 0;  // throws with the size asked on failure
  virtual void release(void* ptr) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(float* dst, float value, size_t n) = 0;
  // Waits for all queued work (a no-op on the CPU).
  virtual void synchronize() = 0;

  // ---- convolution (no bias) ----
  virtual void conv2d_forward(float* out, const float* inp, const float* weight,
                              const ConvShape& s) = 0;
  virtual void conv2d_backward_data(float* dinp, const float* dout, const float* weight,
                                    const ConvShape& s) = 0;
  virtual void conv2d_backward_weight(float* dweight, const float* dout, const float* inp,
                                      const ConvShape& s, bool accumulate) = 0;

  // ---- batch norm over rows: x is (M, C), M = N*H*W for 2-D (NHWC), M = N for 1-D ----
  // Training: normalizes with batch statistics (biased variance), saves mean and
  // rstd = 1/sqrt(var + eps) (each C floats) for the backward, and when running_mean is
  // not null updates running_mean/var with momentum (PyTorch sense: new = (1-m)*old + m*batch)
  // using the unbiased variance var * M/(M-1). Requires M > 1.
  // Both forwards apply `epilogue` to the normalized value before writing it:
  // out = relu(bn(x) + residual), the add only when residual is set, the clamp only when relu;
  // each rounds and treats NaN exactly as the backend's add and relu_forward, so a fused call
  // equals the separate ops. out may alias inp or epilogue.residual (same index only).
  virtual void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd,
                                       float* running_mean, float* running_var,
                                       const float* inp, const float* gamma, const float* beta,
                                       int M, int C, float momentum, float eps,
                                       const BnEpilogue& epilogue) = 0;
  virtual void batchnorm_forward_eval(float* out, const float* inp, const float* gamma,
                                      const float* beta, const float* running_mean,
                                      const float* running_var, int M, int C, float eps,
                                      const BnEpilogue& epilogue) = 0;
  // relu_out: null, or the output of a forward with epilogue.relu; the gradient then first
  // passes the ReLU (dout where relu_out > 0 else 0, as relu_backward), so the backward of
  // BN+ReLU is one call. dinp may alias dout.
  virtual void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                                  const float* inp, const float* save_mean,
                                  const float* save_rstd, const float* gamma, int M, int C,
                                  bool accumulate, const float* relu_out) = 0;

  // ---- elementwise ----
  virtual void relu_forward(float* out, const float* inp, size_t n) = 0;
  // dinp = dout where out > 0 else 0 (mask from the forward output; in-place allowed).
  virtual void relu_backward(float* dinp, const float* dout, const float* out, size_t n) = 0;
  // out = a + b (residual add; out may alias a or b).
  virtual void add(float* out, const float* a, const float* b, size_t n) = 0;
  // dst += src
  virtual void accumulate(float* dst, const float* src, size_t n) = 0;

  // ---- pooling ----
  // argmax holds, per output element, the flat index h*W + w of the chosen input pixel.
  virtual void maxpool2d_forward(float* out, int32_t* argmax, const float* inp,
                                 const PoolShape& s) = 0;
  virtual void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax,
                                  const PoolShape& s) = 0;
  // inp (N, HW, C) -> out (N, C): mean over HW.
  virtual void avgpool_forward(float* out, const float* inp, int N, int HW, int C) = 0;
  virtual void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) = 0;

  // ---- linear: inp (B, I), weight (O, I), bias (O) or null, out (B, O) ----
  virtual void linear_forward(float* out, const float* inp, const float* weight,
                              const float* bias, int B, int I, int O) = 0;
  // dinp (=) may be null (first layer); dbias may be null (no bias).
  virtual void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int B, int I, int O,
                               bool accumulate) = 0;

  // ---- losses (the scalar result lives in device memory: no host sync in a step) ----
  // BYOL regression loss of BYOL.md for one direction:
  //   loss (+)= mean_b || n(p_b) - n(z_b) ||^2, n(x) = x * rsqrt(max(|x|^2, 1e-12)).
  // p, z: (B, D). z is a target output (no gradient).
  virtual void byol_loss_forward(float* loss, const float* p, const float* z, int B, int D,
                                 bool accumulate) = 0;
  // dp = dloss * d(loss)/dp (=).
  virtual void byol_loss_backward(float* dp, const float* p, const float* z, float dloss,
                                  int B, int D) = 0;
  // Softmax cross-entropy, mean over the batch. logits (B, K), labels int32 in [0, K).
  // probs (B, K) is saved for the backward.
  virtual void cross_entropy_forward(float* loss, float* probs, const float* logits,
                                     const int32_t* labels, int B, int K) = 0;
  virtual void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* labels,
                                      float dloss, int B, int K) = 0;

  // ---- parameter updates over flat buffers ----
  // target += (1 - tau) * (online - target). tau_device: when not null, tau is read from that
  // one float of backend memory when the update runs, and `tau` is ignored.
  virtual void ema_update(float* target, const float* online, size_t n, float tau,
                          const float* tau_device) = 0;
  // segments is a HOST array (the offsets table). grads are read-only; params and the
  // optimizer state (momentum; AdamW: exp_avg then exp_avg_sq in `state`, 2n floats)
  // are updated in place. Default implementations report NotSupported.
  virtual void lars_update(float* params, float* momentum, const float* grads,
                           const ParamSegment* segments, int num_segments,
                           const LarsOptions& opt) {
    throw NotSupported(std::string(device_name(type())) + ": lars_update not implemented");
  }
  virtual void sgd_update(float* params, float* momentum, const float* grads,
                          const ParamSegment* segments, int num_segments, const SgdOptions& opt) {
    throw NotSupported(std::string(device_name(type())) + ": sgd_update not implemented");
  }
  virtual void adamw_update(float* params, float* state, const float* grads,
                            const ParamSegment* segments, int num_segments,
                            const AdamWOptions& opt) {
    throw NotSupported(std::string(device_name(type())) + ": adamw_update not implemented");
  }

  // ---- augmentation (byol/augment.h): uint8 NHWC images -> normalized float NHWC views.
  // params is a HOST array of N per-sample parameter sets drawn by the core.
  virtual void augment(float* out, const uint8_t* images, const AugmentParams* params, int N,
                       int H, int W, int C, int out_h, int out_w) {
    throw NotSupported(std::string(device_name(type())) + ": augment not implemented");
  }

  // ---- profiling (the CUDA backend: NVTX ranges and cudaProfilerStart/Stop) ----
  // Named ranges on the calling thread's stack, nested, for timeline tools. `name` must
  // outlive the call only (NVTX copies it). The defaults do nothing, so the CPU path pays one
  // virtual call per range; callers keep names prebuilt (no string building per call).
  // noexcept: Range's destructor pops during unwinding.
  virtual void range_push(const char* name) noexcept {}
  virtual void range_pop() noexcept {}
  // The capture window of a profiler that waits for it (nsys --capture-range=cudaProfilerApi).
  // Return false when this backend has no such profiler (CPU), true when the call reached it.
  // profiler_stop first waits for the work queued before it, so the window holds those kernels.
  virtual bool profiler_start() { return false; }
  virtual bool profiler_stop() { return false; }

  // ---- op timing: where a step's time goes, without an external profiler ----
  // set_op_timing(true): from the next op on, each op's time is measured and summed per
  // (phase, op): the CPU times the call with a clock (its ops run to completion inside it), the
  // CUDA backend records events on its stream around the op (device time; a few microseconds of
  // host time per op, so launch-bound steps run slower while it is on). Ops inside a graph
  // capture are not timed; a graph launch is one op ("graph_launch"). Switch between steps.
  // Returns false when this backend cannot time ops.
  virtual bool set_op_timing(bool on) { return false; }
  // The sums since timing went on or the last reset, after waiting for queued work.
  virtual std::vector<OpTime> op_times(bool reset) { return {}; }

  // ---- graph capture (CUDA graphs) ----
  // begin_capture: until end_capture, the ops the calling thread enqueues are recorded instead
  // of run (argument checks still run at once and throw as usual; nothing reaches the device).
  // Ops of other threads wait until the capture ends. Only ops whose every changing value is
  // in backend memory belong in a graph. Returns false when the backend cannot capture (CPU).
  virtual bool begin_capture() { return false; }
  // Ends the capture begun on this thread. Returns the graph, or null with *error saying why
  // (an op that cannot be captured, or a capture abandoned after an exception); either way the
  // backend runs ops eagerly again and nothing recorded has run.
  virtual std::unique_ptr<Graph> end_capture(std::string* error) {
    if (error) *error = std::string(device_name(type())) + ": graph capture not supported";
    return nullptr;
  }
};

// Scoped range: pushes on construction, pops on destruction (early returns and exceptions
// included). Usage: `byol::Range range(backend, "online forward");`.
class Range {
 public:
  Range(Backend* backend, const char* name) noexcept : backend_(backend) { backend_->range_push(name); }
  ~Range() { backend_->range_pop(); }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

 private:
  Backend* backend_;
};

// The CPU backend (oneDNN + OpenMP). threads <= 0 means all cores. conv_bf16: convolutions
// forward and backward-data in bfloat16 with float32 accumulation (native/cpu/cpu_backend.h).
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, bool conv_bf16 = false);

}  // namespace byol
