// cpu_backend.h: the CPU backend's class, private to native/cpu. Convolution and matmul
// run on oneDNN (cached primitives, one engine and stream); everything else is OpenMP C++.
// Contract: byol/backend.h. Ops are serialized per backend only where they share state
// (the oneDNN plans and scratch below, under dnnl_mutex_); plain kernels are reentrant.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "../core/op_timer.h"
#include "byol/backend.h"

namespace byol {
namespace cpu {

// Which oneDNN primitive a plan runs; part of the cache key.
enum class PlanOp : int32_t {
  conv_forward = 0,
  conv_backward_data,
  conv_backward_weight,
  linear_forward,
  linear_backward_data,
  linear_backward_weight,
};

// Cache key: the op plus every size and flag its primitives depend on.
struct PlanKey {
  PlanOp op;
  // conv: N H W C K R S stride pad bf16; linear: B I O has_bias; then the OpenMP thread count
  // the primitive was created for (last entry): oneDNN fixes a plan's count at creation.
  int32_t dims[11];
  bool accumulate;
  bool operator==(const PlanKey& o) const;
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const;
};

// A convolution primitive ready to run: user activations are NHWC, user weights OIHW;
// the primitive works on weights in the layout oneDNN chose (often blocked), so weights
// pass through one reorder: OIHW -> chosen before forward/backward-data, chosen -> OIHW
// (summing into the user's buffer when accumulating) after backward-weight.
struct ConvPlan {
  dnnl::primitive primitive;
  dnnl::memory::desc input_md;          // fwd: src; bwd-data: diff_dst; bwd-weight: src
  dnnl::memory::desc output_md;         // fwd: dst; bwd-data: diff_src; bwd-weight: diff_dst (input)
  dnnl::memory::desc user_weights_md;   // OIHW
  dnnl::memory::desc weights_md;        // the primitive's weights (or diff weights) layout
  bool via_scratch = false;             // weights go through scratch + weights_reorder
  dnnl::reorder weights_reorder;
  // bf16 plans (forward, backward-data): the primitive reads its input (src or diff_dst) as
  // bfloat16 NHWC, which input_reorder makes from the user's float32 buffer in scratch.
  bool bf16 = false;
  dnnl::memory::desc input_bf16_md;
  dnnl::reorder input_reorder;
  std::string impl;                     // oneDNN's implementation name, for benchmarks
  // The primitive's scratchpad (user mode): handed in at every execute from the backend's
  // primitive_scratchpad_, never oneDNN's per-thread global one (see conv_plan).
  dnnl::memory::desc scratchpad_md;
};

// A matmul for linear layers; transposes are expressed through strides, never copied.
struct LinearPlan {
  dnnl::primitive primitive;
  dnnl::memory::desc src_md, weights_md, bias_md, dst_md;
  dnnl::memory::desc scratchpad_md;  // user mode (conv_plan says why)
};

// 64-byte aligned, grow-only host buffer (oneDNN scratch for reordered weights).
class ScratchBuffer {
 public:
  ~ScratchBuffer();
  void* get(size_t bytes);  // valid until the next get() with a larger size

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Which code computes the fp32 convolutions (set_conv_algorithm, BYOL_CPU_CONV).
enum class ConvAlgorithm {
  automatic,  // per shape: conv_uses_gemm
  onednn,     // oneDNN's direct convolutions throughout
  gemm,       // im2col + SGEMM for every float32 convolution (conv_gemm.cc)
};
// "auto", "onednn", "gemm"; parse_conv_algorithm throws byol::Error naming `what` otherwise.
const char* conv_algorithm_name(ConvAlgorithm a);
ConvAlgorithm parse_conv_algorithm(const std::string& text, const std::string& what);
// The algorithm a new CPU backend starts with, as written: the BYOL_CPU_CONV environment
// variable, or "auto" when it is unset or empty (not validated here; the backend's constructor
// parses it).
std::string conv_algorithm_setting();

// Marks the calling thread as one whose CPU backend work runs on one thread (serial true): sets
// its OpenMP count to 1 now, and its ops then set 1 instead of the backend's count. For hosts that keep their own threads
// out of OpenMP (the addon: the JavaScript threads' small synchronous copies, and libuv threads
// feeding the GPU). Every host thread that opens a parallel region gets a libgomp pool of its
// own, and once the pools hold more threads than there are CPUs libgomp stops spinning at
// barriers in every pool: each of a step's hundreds of regions then wakes its workers through
// futex calls (the Node step took 1.2x the native one that way).
void set_thread_serial(bool serial);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads);
  ~CpuBackend() override;

  DeviceType type() const override { return DeviceType::cpu; }
  std::string describe() const override;

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(float* dst, float value, size_t n) override;
  void synchronize() override {}

  void conv2d_forward(float* out, const float* inp, const float* weight,
                      const ConvShape& s) override;
  void conv2d_backward_data(float* dinp, const float* dout, const float* weight,
                            const ConvShape& s) override;
  void conv2d_backward_weight(float* dweight, const float* dout, const float* inp,
                              const ConvShape& s, bool accumulate) override;

  void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd,
                               float* running_mean, float* running_var, const float* inp,
                               const float* gamma, const float* beta, int M, int C,
                               float momentum, float eps, const BnEpilogue& epilogue) override;
  void batchnorm_forward_eval(float* out, const float* inp, const float* gamma,
                              const float* beta, const float* running_mean,
                              const float* running_var, int M, int C, float eps,
                              const BnEpilogue& epilogue) override;
  void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                          const float* inp, const float* save_mean, const float* save_rstd,
                          const float* gamma, int M, int C, bool accumulate,
                          const float* relu_out) override;

  void relu_forward(float* out, const float* inp, size_t n) override;
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override;
  void add(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* dst, const float* src, size_t n) override;

  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp,
                         const PoolShape& s) override;
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax,
                          const PoolShape& s) override;
  void avgpool_forward(float* out, const float* inp, int N, int HW, int C) override;
  void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) override;

  void linear_forward(float* out, const float* inp, const float* weight, const float* bias,
                      int B, int I, int O) override;
  void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int B, int I, int O,
                       bool accumulate) override;

  void byol_loss_forward(float* loss, const float* p, const float* z, int B, int D,
                         bool accumulate) override;
  void byol_loss_backward(float* dp, const float* p, const float* z, float dloss, int B,
                          int D) override;
  void cross_entropy_forward(float* loss, float* probs, const float* logits,
                             const int32_t* labels, int B, int K) override;
  void cross_entropy_backward(float* dlogits, const float* probs, const int32_t* labels,
                              float dloss, int B, int K) override;

  void ema_update(float* target, const float* online, size_t n, float tau, const float* tau_device) override;
  void lars_update(float* params, float* momentum, const float* grads,
                   const ParamSegment* segments, int num_segments,
                   const LarsOptions& opt) override;
  void sgd_update(float* params, float* momentum, const float* grads,
                  const ParamSegment* segments, int num_segments,
                  const SgdOptions& opt) override;
  void adamw_update(float* params, float* state, const float* grads,
                    const ParamSegment* segments, int num_segments,
                    const AdamWOptions& opt) override;
  void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H,
               int W, int C, int out_h, int out_w) override;

  // Ranges only feed op timing here (no timeline tool on the CPU); each op opens an OpClock.
  void range_push(const char* name) noexcept override;
  void range_pop() noexcept override;
  bool set_op_timing(bool on) override;
  std::vector<OpTime> op_times(bool reset) override;

  // Number of cached oneDNN plans, and the oneDNN implementation a convolution runs
  // (e.g. "brg:avx512_core"), for tests and benchmarks.
  size_t cached_plans() const;
  std::string conv_implementation(PlanOp op, const ConvShape& s);

  // Convolution precision for ops started after the call. false (the default): float32
  // throughout. true: forward and backward-data read their activations and weights rounded
  // to bfloat16 (round to nearest even) and accumulate and write float32; backward-weight stays
  // float32 (in bf16 it gains little here and its gradients feed the optimizer directly).
  // About 2x faster convolutions where the CPU has bf16 dot products (AVX512_BF16, AMX);
  // elsewhere oneDNN emulates them, correctly but slowly.
  // Throws byol::NotSupported when asked for bf16 on a CPU whose oneDNN ISA has no bf16
  // convolutions (below AVX-512: oneDNN 2.6 cannot create the primitives).
  void set_conv_bf16(bool bf16);
  bool conv_bf16() const { return conv_bf16_.load(); }

  // The convolution algorithm for ops started after the call. The backend starts with
  // conv_algorithm_setting(). automatic: where oneDNN runs below AVX-512, im2col + SGEMM for the
  // float32 convolutions and passes conv_uses_gemm's measured rule picks (32+ channels on both
  // sides; up to twice oneDNN's direct kernels there), oneDNN everywhere else. Both agree to
  // float rounding.
  void set_conv_algorithm(ConvAlgorithm algorithm) { conv_algorithm_.store(algorithm); }
  ConvAlgorithm conv_algorithm() const { return conv_algorithm_.load(); }
  // Whether this convolution runs as im2col + SGEMM under the current settings.
  bool conv_uses_gemm(PlanOp op, const ConvShape& s) const;

  // The OpenMP thread count of later ops (>= 1; the addon's setNumThreads, applied between
  // tasks on its compute thread).
  void set_threads(int threads);

 private:
  // OpenMP's thread count is a per-host-thread setting and ops may arrive from any thread
  // (Node's worker pool), so every op applies the configured count before it runs.
  void use_threads() const;

  ConvPlan& conv_plan(PlanOp op, const ConvShape& s, bool accumulate);
  // conv_gemm.cc: "gemm:sgemm" (a 1x1 stride-1 convolution, never unfolded) or
  // "gemm:im2col+sgemm"; then the passes (dnnl_mutex_ held: they use scratch_ and input_scratch_).
  static const char* gemm_conv_implementation(const ConvShape& s);
  const float* gemm_weights(const float* weight, const ConvShape& s);  // KRSC copy (1x1: weight)
  void gemm_conv_forward(float* out, const float* inp, const float* weight, const ConvShape& s);
  void gemm_conv_backward_data(float* dinp, const float* dout, const float* weight, const ConvShape& s);
  void gemm_conv_backward_weight(float* dweight, const float* dout, const float* inp, const ConvShape& s,
                                 bool accumulate);
  dnnl::memory plan_input(ConvPlan& plan, const float* inp);
  LinearPlan& linear_plan(PlanOp op, int B, int I, int O, bool has_bias, bool accumulate);
  void limit_cache();

  std::atomic<int> threads_;  // OpenMP threads every op runs with (>= 1)
  std::string cpu_model_;
  dnnl::engine engine_;
  dnnl::stream stream_;

  mutable std::mutex dnnl_mutex_;  // guards the plans, scratch_ and stream_
  std::unordered_map<PlanKey, std::unique_ptr<ConvPlan>, PlanKeyHash> conv_plans_;
  std::unordered_map<PlanKey, std::unique_ptr<LinearPlan>, PlanKeyHash> linear_plans_;
  ScratchBuffer scratch_;        // reordered weights (GEMM path: KRSC weights, KRSC weight gradient)
  ScratchBuffer input_scratch_;  // bf16 copies of a convolution's input (GEMM path: unfolded rows)
  ScratchBuffer primitive_scratchpad_;  // the conv and matmul primitives' scratchpads (user mode)
  // A plan's scratchpad (its scratchpad_md) over primitive_scratchpad_ (dnnl_mutex_ held).
  dnnl::memory scratchpad(const dnnl::memory::desc& md);
  std::atomic<bool> conv_bf16_{false};
  std::atomic<ConvAlgorithm> conv_algorithm_{ConvAlgorithm::automatic};
  bool conv_gemm_auto_ = false;  // cpu_capabilities().conv_gemm_auto, read once (conv_uses_gemm)
  OpTimer op_timer_;
  friend class OpClock;
};

// First line of every op: while op timing is on, measures the op's wall time (CPU ops run to
// completion inside the call) and files it under the op and the thread's phase. Nested ops
// are part of the outer op's time.
class OpClock {
 public:
  OpClock(CpuBackend* backend, const char* op);
  ~OpClock();
  OpClock(const OpClock&) = delete;
  OpClock& operator=(const OpClock&) = delete;
  // The op's nominal work (op_timer.h), filed with its time: `estimate` returns the OpWork and
  // runs only while the op is timed, so untimed ops pay nothing for it.
  template <typename Estimate>
  void work(Estimate&& estimate) {
    if (timer_) work_ = estimate();
  }

 private:
  OpTimer* timer_ = nullptr;  // null: not timing this op
  const char* op_;
  int phase_ = 0;
  double start_ms_ = 0;
  OpWork work_;
  OpNesting nesting_;
};

// What the CPU backend computes with on this machine (for `byol info`; needs no backend).
struct CpuCapabilities {
  std::string onednn_version;    // "2.6.3", from the loaded library (not the headers)
  std::string onednn_isa;        // the ISA oneDNN's JIT dispatches to, e.g. "avx512_core_bf16"
  std::string kernel_variant;    // the code path our BYOL_CPU_KERNEL loops run: "x86-64-v4", ...
  std::string kernel_isa;        // what that path uses, e.g. "AVX-512 (F, BW, CD, DQ, VL)"
  std::vector<std::string> kernel_variants;  // every compiled path, best first
  bool kernels_multiversioned = false;  // false: one path fixed at build time
  bool bf16_native = false;      // oneDNN's ISA has bf16 dot products (set_conv_bf16 pays off)
  bool bf16_supported = false;   // oneDNN's ISA runs bf16 convolutions at all (AVX-512 and up)
  bool conv_gemm_auto = false;   // the automatic rule runs wide convolutions as im2col + SGEMM
                                 // (oneDNN below AVX-512; CpuBackend::conv_uses_gemm)
  std::string compiler;          // what built byol.node, e.g. "GCC 12.2.0"
};
CpuCapabilities cpu_capabilities();

// Argument checks shared by the ops; `op` names the op in the message.
#define BYOL_CPU_CHECK_PTR(op, ptr) \
  BYOL_CHECK((ptr) != nullptr, op, ": expected a buffer for ", #ptr, " but received null")
#define BYOL_CPU_CHECK_POSITIVE(op, value) \
  BYOL_CHECK((value) > 0, op, ": expected ", #value, " > 0 but received ", (value))

// Element counts below which a kernel stays on one thread: waking the team costs more
// than the work.
constexpr int64_t kParallelMinElements = 1 << 15;

}  // namespace cpu
}  // namespace byol
