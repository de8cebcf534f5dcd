// cuda_backend.h: byol::Backend on one NVIDIA GPU (cuDNN convolutions, cuBLAS GEMMs, our
// kernels), as built into libbyol_cuda.so and created through byol_cuda_create (plugin.h).
// Contract: every op is enqueued on the backend's one stream, in call order; nothing
// synchronizes the host except download(), synchronize() and the first use of a new conv
// shape in benchmark mode. Memory comes from a stream-ordered pool on that stream. Ops may
// be called from any host thread (each op makes the backend's device current).
// Settings read once from the environment:
//   BYOL_CUDA_TF32         unset or 1 (default): TF32 tensor cores in convolutions and GEMMs
//                          (~1e-3 relative error, several times faster; PyTorch's convolution
//                          default); 0: full FP32 everywhere (results within ~1e-5 of the CPU
//                          backend: what the tests compare); "conv": TF32 in convolutions only.
//   BYOL_CUDNN_BENCHMARK   1: time cuDNN's algorithms once per conv shape (cudnnFind*)
//                          instead of taking its heuristic's first choice.
//   BYOL_CUDNN_DETERMINISTIC 1: only deterministic cuDNN algorithms.
//   BYOL_CUDNN_WORKSPACE_MB  most workspace one conv may use (default 1024).
// Profiling: every op is an NVTX range named after it (OpScope), nested inside the step's
// phase and layer ranges that the core pushes through range_push/range_pop.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../core/op_timer.h"
#include "byol/backend.h"
#include "cuda_check.h"

namespace byol {
namespace cuda {

[[noreturn]] void throw_cudnn_error(cudnnStatus_t status, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line);

}  // namespace cuda
}  // namespace byol

#define BYOL_CUDNN_CHECK(call)                                                   \
  do {                                                                           \
    cudnnStatus_t byol_status_ = (call);                                         \
    if (byol_status_ != CUDNN_STATUS_SUCCESS)                                    \
      ::byol::cuda::throw_cudnn_error(byol_status_, #call, __FILE__, __LINE__);  \
  } while (0)

#define BYOL_CUBLAS_CHECK(call)                                                  \
  do {                                                                           \
    cublasStatus_t byol_status_ = (call);                                        \
    if (byol_status_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::byol::cuda::throw_cublas_error(byol_status_, #call, __FILE__, __LINE__); \
  } while (0)

namespace byol {
namespace cuda {

class CudaBackend;

// Keeps other threads' ops out of a graph capture (CudaBackend::begin_capture): every op holds
// its backend's gate shared while it runs, a capture holds it exclusively from begin_capture to
// end_capture, and the capturing thread's own ops pass. Re-entrant on a thread (an op that
// calls another op, a DeviceBuffer freed inside an op).
// New ops wait while a capture is waiting for the gate (no starvation of the capture). An op
// that throws on the capturing thread marks the capture failed.
class OpGate {
 public:
  explicit OpGate(const CudaBackend* backend);
  ~OpGate();
  OpGate(const OpGate&) = delete;
  OpGate& operator=(const OpGate&) = delete;

 private:
  const CudaBackend* backend_;
  const CudaBackend* previous_;  // this thread's holder before (restored: nesting across backends)
  int uncaught_;                 // std::uncaught_exceptions() at entry
  bool held_ = false;            // this object took the gate shared
};

// Times one op while op timing is on (Backend::set_op_timing): events on the backend's stream
// before and after the op's work, filed by CudaBackend::resolve_op_events. Outermost ops only;
// nothing is recorded inside a graph capture. Never throws from its destructor.
class OpEvents {
 public:
  OpEvents(CudaBackend* backend, const char* op);
  ~OpEvents();
  OpEvents(const OpEvents&) = delete;
  OpEvents& operator=(const OpEvents&) = delete;
  // The op's nominal work (op_timer.h), filed with its time: `estimate` returns the OpWork and
  // runs only while the op is timed.
  template <typename Estimate>
  void work(Estimate&& estimate) {
    if (backend_) work_ = estimate();
  }

 private:
  CudaBackend* backend_ = nullptr;  // null: not timing this op
  const char* op_;
  int phase_ = 0;
  cudaEvent_t start_ = nullptr;
  OpWork work_;
  OpNesting nesting_;
};

// First line of every op: names it (errors, NVTX), waits out another thread's capture, makes
// the backend's device current, and times it while op timing is on.
#define BYOL_CUDA_OP(name)                           \
  ::byol::cuda::OpScope byol_op_scope_(name);        \
  ::byol::cuda::OpGate byol_op_gate_(this);          \
  activate();                                        \
  ::byol::cuda::OpEvents byol_op_events_(this, name)

// After BYOL_CUDA_OP: the op's nominal work for op timing (OpWork, op_timer.h), evaluated only
// while the op is timed.
#define BYOL_CUDA_OP_WORK(...) byol_op_events_.work([&] { return __VA_ARGS__; })

// Device memory from the backend's pool, freed (stream-ordered) when it goes out of scope:
// scratch space of one op. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CudaBackend* backend, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  CudaBackend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Descriptors and chosen algorithms of one convolution shape (cached per ConvShape).
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  // One per direction: the math type lives in the descriptor and each direction's chosen
  // algorithm may want a different one.
  cudnnConvolutionDescriptor_t conv_forward = nullptr, conv_backward_data = nullptr,
                               conv_backward_filter = nullptr;
  bool has_forward = false, has_backward_data = false, has_backward_filter = false;
  cudnnConvolutionFwdAlgo_t forward_algo{};
  cudnnConvolutionBwdDataAlgo_t backward_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t backward_filter_algo{};
  size_t forward_workspace = 0, backward_data_workspace = 0, backward_filter_workspace = 0;
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan();
};

class CudaBackend final : public Backend {
 public:
  // Throws byol::Error naming what is missing: the NVIDIA driver, a GPU, the device index,
  // a usable kernel image for this GPU, or a library handle (cuDNN, cuBLAS).
  explicit CudaBackend(int device);
  ~CudaBackend() override;

  DeviceType type() const override { return DeviceType::cuda; }
  std::string describe() const override;

  void* alloc(size_t bytes) override;
  void release(void* ptr) override;
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(float* dst, float value, size_t n) override;
  void synchronize() override;

  void conv2d_forward(float* out, const float* inp, const float* weight, const ConvShape& s) override;
  void conv2d_backward_data(float* dinp, const float* dout, const float* weight,
                            const ConvShape& s) override;
  void conv2d_backward_weight(float* dweight, const float* dout, const float* inp,
                              const ConvShape& s, bool accumulate) override;

  void batchnorm_forward_train(float* out, float* save_mean, float* save_rstd, float* running_mean,
                               float* running_var, const float* inp, const float* gamma,
                               const float* beta, int M, int C, float momentum, float eps,
                               const BnEpilogue& epilogue) override;
  void batchnorm_forward_eval(float* out, const float* inp, const float* gamma, const float* beta,
                              const float* running_mean, const float* running_var, int M, int C,
                              float eps, const BnEpilogue& epilogue) override;
  void batchnorm_backward(float* dinp, float* dgamma, float* dbeta, const float* dout,
                          const float* inp, const float* save_mean, const float* save_rstd,
                          const float* gamma, int M, int C, bool accumulate,
                          const float* relu_out) override;

  void relu_forward(float* out, const float* inp, size_t n) override;
  void relu_backward(float* dinp, const float* dout, const float* out, size_t n) override;
  void add(float* out, const float* a, const float* b, size_t n) override;
  void accumulate(float* dst, const float* src, size_t n) override;

  void maxpool2d_forward(float* out, int32_t* argmax, const float* inp, const PoolShape& s) override;
  void maxpool2d_backward(float* dinp, const float* dout, const int32_t* argmax,
                          const PoolShape& s) override;
  void avgpool_forward(float* out, const float* inp, int N, int HW, int C) override;
  void avgpool_backward(float* dinp, const float* dout, int N, int HW, int C) override;

  void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int B,
                      int I, int O) override;
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
  // optim.cc: the segment table is uploaded once per distinct table and cached; a call then
  // only enqueues kernels (no host synchronization).
  void lars_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                   int num_segments, const LarsOptions& opt) override;
  void sgd_update(float* params, float* momentum, const float* grads, const ParamSegment* segments,
                  int num_segments, const SgdOptions& opt) override;
  void adamw_update(float* params, float* state, const float* grads, const ParamSegment* segments,
                    int num_segments, const AdamWOptions& opt) override;
  // augment.cc: the CPU's checks, the parameters (and blur taps) through pinned staging with an
  // asynchronous copy, then kernels/augment.cu; no host synchronization.
  void augment(float* out, const uint8_t* images, const AugmentParams* params, int N, int H, int W,
               int C, int out_h, int out_w) override;

  // NVTX ranges (header-only NVTX3: free until a tool such as nsys is attached) and the
  // cudaProfilerStart/Stop capture window of `nsys profile --capture-range=cudaProfilerApi`.
  void range_push(const char* name) noexcept override;
  void range_pop() noexcept override;
  bool profiler_start() override;
  bool profiler_stop() override;
  // Op timing (OpEvents): the sums come from cudaEventElapsedTime, so they are device time.
  bool set_op_timing(bool on) override;
  std::vector<OpTime> op_times(bool reset) override;

  // graph.cc: stream capture of the backend's stream (cudaStreamCaptureModeThreadLocal) into
  // an instantiated CUDA graph. Inside a capture, scratch DeviceBuffers become the graph's own
  // allocation nodes; ops that would synchronize, allocate outside the pool or grow the shared
  // cuDNN workspace throw instead, which abandons the capture (end_capture says why).
  bool begin_capture() override;
  std::unique_ptr<Graph> end_capture(std::string* error) override;
  // Whether the calling thread is capturing on this backend.
  bool capturing_here() const;
  // Inside this thread's capture: marks the capture failed (end_capture returns null with the
  // reason) and throws "cuda: <op> <why> and cannot be part of a graph capture". Else nothing.
  void refuse_in_capture(const char* why);

  // For DeviceBuffer and the conv/linear files.
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  friend class DeviceBuffer;
  friend class OpGate;
  friend class CudaGraph;
  friend class OpEvents;
  void teardown() noexcept;  // releases every handle; safe on a half-built backend
  void* alloc_raw(size_t bytes, const char* what);
  void free_raw(void* ptr);
  // Makes this backend's device current on the calling thread.
  void activate() const;
  // Runs `wait` (a host wait for queued work: download's copies, synchronize) with the device
  // status word's copy to the host queued first when a checking kernel may have set it, so both
  // share the one wait; then check_device_status() throws the error a destructor deferred and,
  // when the word was fetched, clears it and throws on a bad-label bit. When `wait` throws
  // instead, the word is left to the next check, so a bad label is still reported after the
  // other error.
  void wait_checking_status(const std::function<void()>& wait);
  void check_device_status(bool fetched);
  // A kernel that may set the status word was enqueued (or recorded: the capture's graph then
  // marks the word at every launch).
  void note_status_kernel() {
    status_may_be_set_ = true;
    if (capturing_here()) capture_sets_status_ = true;
  }
  void ensure_workspace(size_t bytes);
  ConvPlan& conv_plan(const ConvShape& s);
  void choose_forward_algo(ConvPlan& plan, const ConvShape& s);
  void choose_backward_data_algo(ConvPlan& plan, const ConvShape& s);
  void choose_backward_filter_algo(ConvPlan& plan, const ConvShape& s);
  void gemm(bool transa, bool transb, int m, int n, int k, const float* A, int lda, const float* B,
            int ldb, float beta, float* C, int ldc);

  int device_ = 0;
  cudaDeviceProp props_{};
  int driver_version_ = 0, runtime_version_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;  // null: the GPU has no memory pools; cudaMalloc/cudaFree
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  size_t cublas_workspace_bytes_ = 0;

  bool tf32_conv_ = false, tf32_matmul_ = false;
  bool cudnn_benchmark_ = false, cudnn_deterministic_ = false;
  size_t workspace_limit_ = size_t(1) << 30;

  // Grown on demand, never shrunk: every conv of a step shares it (ops run in stream order).
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  // Graphs bake the workspace's address into their conv nodes (graph.cc): buffers with pins
  // are not freed when the workspace grows but retired, and freed with their last graph.
  // Guarded by mutex_.
  std::map<void*, int> workspace_pins_;
  std::vector<void*> retired_workspaces_;

  unsigned* device_status_ = nullptr;    // kernels OR DeviceStatusBits into it
  unsigned* host_status_ = nullptr;      // pinned copy target
  std::atomic<bool> status_may_be_set_{false};  // a checking kernel ran since the last read
  // A failure inside release() (called from destructors), thrown by the next sync.
  std::mutex deferred_mutex_;
  std::string deferred_error_;

  // ---- op timing (OpEvents) ----
  struct TimedOp {
    int phase;
    const char* op;
    cudaEvent_t start, end;
    OpWork work;
  };
  OpTimer op_timer_;
  std::mutex events_mutex_;            // guards the two vectors below
  std::vector<cudaEvent_t> free_events_;
  std::vector<TimedOp> timed_ops_;     // recorded, not yet filed, in stream order
  cudaEvent_t take_event();            // from free_events_ or new; null when none can be made
  // Files the timed ops whose end event has completed (all of them when `wait`), in order.
  void resolve_op_events(bool wait) noexcept;

  // ---- graph capture (graph.cc) ----
  mutable std::shared_mutex capture_gate_;  // OpGate: shared per op, exclusive per capture
  std::atomic<bool> capture_pending_{false};  // a capture wants or holds the gate
  mutable std::mutex capture_wait_mutex_;
  mutable std::condition_variable capture_wait_cv_;
  void release_capture_gate();  // unlocks the gate, clears capture_pending_, wakes waiting ops
  std::atomic<std::thread::id> capture_owner_{};  // the capturing thread; default id: none
  std::string capture_error_;  // why begin_capture failed, for end_capture
  // Touched by the capturing thread only (other threads wait at the gate):
  std::vector<void*> capture_allocs_;          // allocated inside the capture (graph nodes)
  std::vector<void*> capture_deferred_frees_;  // allocated before it, freed inside it
  bool capture_sets_status_ = false;          // a status-setting kernel was recorded
  std::string capture_broken_;                 // why the capture must fail although CUDA took it
  std::vector<const void*> capture_tables_;    // segment tables the captured ops read (optim_mutex_)

  std::mutex mutex_;  // guards plan cache, workspace, staging and the status flag
  std::map<std::tuple<int, int, int, int, int, int, int, int, int>, std::unique_ptr<ConvPlan>> plans_;

  // ---- optimizer segment tables (optim.cc) ----
  // The device copy of one ParamSegment table (kernels.h OptimChunk + OptimSegment arrays),
  // keyed by the table's content: the model passes the same table every step, so a step finds
  // it here and uploads nothing. Plain cudaMalloc memory rather than the pool: it is freed by
  // the destructor, after teardown() has destroyed the pool.
  struct SegmentTable {
    int device = 0;
    std::vector<ParamSegment> key;  // the host table it was built from
    uint64_t hash = 0;
    int num_chunks = 0;
    void* memory = nullptr;  // OptimChunk[num_chunks], then OptimSegment[key.size()]
    uint64_t last_use = 0;
    int pins = 0;  // graphs that read this table (graph.cc): never evicted while > 0
    SegmentTable() = default;
    SegmentTable(const SegmentTable&) = delete;
    SegmentTable& operator=(const SegmentTable&) = delete;
    ~SegmentTable();
  };
  // Finds or builds the table of a checked segment array; the caller holds optim_mutex_.
  const SegmentTable& segment_table(const ParamSegment* segments, int num_segments);
  std::mutex optim_mutex_;  // guards segment_tables_ (and keeps an entry alive while in use)
  std::vector<std::unique_ptr<SegmentTable>> segment_tables_;
  uint64_t segment_table_clock_ = 0;

  // ---- pinned staging (staging.cc) ----
  // Pageable host memory cannot be read by an asynchronous copy, and the caller may reuse its
  // buffer (upload's source, augment's parameter array) as soon as the call returns: the bytes
  // are copied into pinned memory first and uploaded from there asynchronously. A slot is
  // reusable once its copy has run (its event); a ring of slots lets the host run ahead of the
  // GPU by several calls without waiting (a step's uploads: two views' pixels, its scalars,
  // its labels). One ring for upload(), one for augment(), and one for download(), whose
  // copies land in pinned memory so it can wait for an event just after them. Freed by the
  // destructor (after teardown()).
  struct StagingRing {
    struct Slot {
      void* host = nullptr;
      size_t bytes = 0;
      cudaEvent_t done = nullptr;
      uint64_t last_use = 0;
    };
    std::mutex mutex;  // held from acquire() until the slot's copy and event are enqueued
    std::vector<Slot> slots;
    uint64_t clock = 0;
    // A slot of at least `bytes` whose previous copy has completed; waits only when all of the
    // ring's slots (staging.cc: kMaxStagingSlots) are still in flight, for the least recently used.
    Slot& acquire(size_t bytes);
    StagingRing() = default;
    StagingRing(const StagingRing&) = delete;
    StagingRing& operator=(const StagingRing&) = delete;
    ~StagingRing();
  };
  StagingRing upload_staging_, augment_staging_, download_staging_;
};

}  // namespace cuda
}  // namespace byol
