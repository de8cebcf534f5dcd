// conv.cc: 2-D convolution forward, backward-data and backward-filter through cuDNN's
// legacy (v7-style) API, on NHWC activations.
// Contract (backend.h): weights are OIHW (PyTorch). cuDNN's NHWC paths pair NHWC tensors
// with KRSC filters, so weights are transposed into a scratch KRSC copy per call (and the
// weight gradient back, adding when `accumulate`); a 1x1 or single-input-channel filter
// has the same bytes in both layouts and is used in place. One plan (descriptors +
// algorithms, chosen by cuDNN's heuristic, or timed once with BYOL_CUDNN_BENCHMARK=1) is
// cached per shape; the workspace is one buffer shared by all convs, grown on demand.
#include <cstdint>
#include <sstream>

#include "cuda_backend.h"
#include "kernels/kernels.h"

namespace byol {
namespace cuda {
namespace {

std::string shape_text(const ConvShape& s) {
  std::ostringstream os;
  os << "input (N=" << s.N << ", H=" << s.H << ", W=" << s.W << ", C=" << s.C << "), weight (K="
     << s.K << ", C=" << s.C << ", R=" << s.R << ", S=" << s.S << "), stride " << s.stride
     << ", pad " << s.pad;
  return os.str();
}

void check_conv_shape(const char* op, const ConvShape& s) {
  BYOL_CHECK(s.N > 0 && s.H > 0 && s.W > 0 && s.C > 0 && s.K > 0 && s.R > 0 && s.S > 0, "cuda: ",
             op, ": expected every size > 0 but received ", shape_text(s));
  BYOL_CHECK(s.stride > 0 && s.pad >= 0, "cuda: ", op, ": expected stride > 0 and pad >= 0 but received ",
             shape_text(s));
  BYOL_CHECK(s.P() > 0 && s.Q() > 0, "cuda: ", op, ": the ", s.R, "x", s.S,
             " kernel does not fit the padded input: ", shape_text(s));
  // The legacy descriptors take int strides: every tensor must stay below 2^31 elements.
  const int64_t in = int64_t(s.N) * s.H * s.W * s.C, out = int64_t(s.N) * s.P() * s.Q() * s.K;
  BYOL_CHECK(in <= INT32_MAX && out <= INT32_MAX, "cuda: ", op,
             ": a tensor of more than 2^31 elements is not supported by cuDNN's NHWC descriptors (input ",
             in, ", output ", out, " elements): use a smaller batch");
}

// cuDNN's NHWC filter layout is KRSC; it equals OIHW when R*S == 1 or C == 1.
bool needs_transpose(const ConvShape& s) { return s.R * s.S != 1 && s.C != 1; }

// The first (fastest) candidate that succeeded, fits the workspace limit and, when asked,
// is deterministic; -1 when none. TF32 is not filtered here: without it the descriptor keeps
// CUDNN_FMA_MATH, which forbids tensor-op math for whichever algorithm runs.
template <typename Perf>
int pick(const Perf* perf, int count, size_t limit, bool deterministic) {
  for (int i = 0; i < count; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (perf[i].memory > limit) continue;
    if (deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    return i;
  }
  return -1;
}

}  // namespace

ConvPlan::~ConvPlan() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  for (cudnnConvolutionDescriptor_t d : {conv_forward, conv_backward_data, conv_backward_filter})
    if (d) cudnnDestroyConvolutionDescriptor(d);
}

ConvPlan& CudaBackend::conv_plan(const ConvShape& s) {
  auto key = std::make_tuple(s.N, s.H, s.W, s.C, s.K, s.R, s.S, s.stride, s.pad);
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;

  auto plan = std::make_unique<ConvPlan>();
  BYOL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x));
  BYOL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.N, s.C, s.H, s.W));
  BYOL_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w));
  BYOL_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC, s.K, s.C, s.R, s.S));
  // The math type is a property of the convolution descriptor and each direction may pick
  // an algorithm with a different one: one descriptor per direction.
  const cudnnMathType_t math = tf32_conv_ ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  for (cudnnConvolutionDescriptor_t* d : {&plan->conv_forward, &plan->conv_backward_data, &plan->conv_backward_filter}) {
    BYOL_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(d));
    BYOL_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(*d, s.pad, s.pad, s.stride, s.stride, 1, 1,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    BYOL_CUDNN_CHECK(cudnnSetConvolutionMathType(*d, math));
  }
  int n = 0, k = 0, p = 0, q = 0;
  BYOL_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv_forward, plan->x, plan->w, &n, &k, &p, &q));
  BYOL_CHECK(n == s.N && k == s.K && p == s.P() && q == s.Q(), "cuda: ", current_op(),
             ": cuDNN computes output (", n, ", ", k, ", ", p, ", ", q, ") but ConvShape says (", s.N,
             ", ", s.K, ", ", s.P(), ", ", s.Q(), ") for ", shape_text(s));
  BYOL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y));
  BYOL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, s.N, s.K, s.P(), s.Q()));
  ConvPlan& ref = *plan;
  plans_.emplace(key, std::move(plan));
  return ref;
}

void CudaBackend::ensure_workspace(size_t bytes) {
  if (bytes <= workspace_bytes_) return;
  // Freeing the old buffer inside a capture would free it again at every launch.
  refuse_in_capture("would grow the cuDNN workspace (a shape not seen before the capture)");
  // Stream-ordered: convs already queued keep using the old buffer until they ran. A buffer
  // that captured graphs use stays allocated (retired) until the last of them is destroyed:
  // their conv nodes hold its address.
  if (workspace_ && workspace_pins_.count(workspace_))
    retired_workspaces_.push_back(workspace_);
  else if (workspace_)
    free_raw(workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  workspace_ = alloc_raw(bytes, "the cuDNN workspace");
  workspace_bytes_ = bytes;
}

void CudaBackend::choose_forward_algo(ConvPlan& plan, const ConvShape& s) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int count = 0;
  if (cudnn_benchmark_)
    BYOL_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(cudnn_, plan.x, plan.w, plan.conv_forward, plan.y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
  else
    BYOL_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(cudnn_, plan.x, plan.w, plan.conv_forward, plan.y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
  int i = pick(perf, count, workspace_limit_, cudnn_deterministic_);
  BYOL_CHECK(i >= 0, "cuda: conv2d_forward: cuDNN offers no algorithm for ", shape_text(s), " within ",
             workspace_limit_ >> 20, " MiB of workspace (BYOL_CUDNN_WORKSPACE_MB)",
             cudnn_deterministic_ ? " that is deterministic" : "");
  plan.forward_algo = perf[i].algo;
  plan.forward_workspace = perf[i].memory;
  if (tf32_conv_) BYOL_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv_forward, perf[i].mathType));
  plan.has_forward = true;
}

void CudaBackend::choose_backward_data_algo(ConvPlan& plan, const ConvShape& s) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int count = 0;
  if (cudnn_benchmark_)
    BYOL_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(cudnn_, plan.w, plan.y, plan.conv_backward_data, plan.x,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
  else
    BYOL_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_, plan.w, plan.y, plan.conv_backward_data, plan.x,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf));
  int i = pick(perf, count, workspace_limit_, cudnn_deterministic_);
  BYOL_CHECK(i >= 0, "cuda: conv2d_backward_data: cuDNN offers no algorithm for ", shape_text(s), " within ",
             workspace_limit_ >> 20, " MiB of workspace (BYOL_CUDNN_WORKSPACE_MB)",
             cudnn_deterministic_ ? " that is deterministic" : "");
  plan.backward_data_algo = perf[i].algo;
  plan.backward_data_workspace = perf[i].memory;
  if (tf32_conv_) BYOL_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv_backward_data, perf[i].mathType));
  plan.has_backward_data = true;
}

void CudaBackend::choose_backward_filter_algo(ConvPlan& plan, const ConvShape& s) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int count = 0;
  if (cudnn_benchmark_)
    BYOL_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(cudnn_, plan.x, plan.y, plan.conv_backward_filter, plan.w,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
  else
    BYOL_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_, plan.x, plan.y, plan.conv_backward_filter, plan.w,
                                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
  int i = pick(perf, count, workspace_limit_, cudnn_deterministic_);
  BYOL_CHECK(i >= 0, "cuda: conv2d_backward_weight: cuDNN offers no algorithm for ", shape_text(s), " within ",
             workspace_limit_ >> 20, " MiB of workspace (BYOL_CUDNN_WORKSPACE_MB)",
             cudnn_deterministic_ ? " that is deterministic" : "");
  plan.backward_filter_algo = perf[i].algo;
  plan.backward_filter_workspace = perf[i].memory;
  if (tf32_conv_) BYOL_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv_backward_filter, perf[i].mathType));
  plan.has_backward_filter = true;
}

void CudaBackend::conv2d_forward(float* out, const float* inp, const float* weight, const ConvShape& s) {
  BYOL_CUDA_OP("conv2d_forward");
  BYOL_CUDA_OP_WORK(conv_work(s));
  // out (N,P,Q,K) = inp (N,H,W,C) * weight (K,C,R,S)
  check_conv_shape("conv2d_forward", s);
  BYOL_CHECK(out && inp && weight, "cuda: conv2d_forward: out, inp and weight must not be null");
  std::lock_guard<std::mutex> lock(mutex_);
  ConvPlan& plan = conv_plan(s);
  if (!plan.has_forward) choose_forward_algo(plan, s);
  DeviceBuffer krsc;
  const float* w = weight;
  if (needs_transpose(s)) {
    krsc = DeviceBuffer(this, size_t(s.K) * s.C * s.R * s.S * sizeof(float));
    oihw_to_krsc(krsc.f32(), weight, s.K, s.C, s.R, s.S, stream_);
    w = krsc.f32();
  }
  ensure_workspace(plan.forward_workspace);
  const float one = 1.0f, zero = 0.0f;
  BYOL_CUDNN_CHECK(cudnnConvolutionForward(cudnn_, &one, plan.x, inp, plan.w, w, plan.conv_forward,
                                           plan.forward_algo, workspace_, plan.forward_workspace,
                                           &zero, plan.y, out));
}

void CudaBackend::conv2d_backward_data(float* dinp, const float* dout, const float* weight,
                                       const ConvShape& s) {
  BYOL_CUDA_OP("conv2d_backward_data");
  BYOL_CUDA_OP_WORK(conv_work(s));
  // dinp (N,H,W,C) = transposed conv of dout (N,P,Q,K) with weight (K,C,R,S)
  check_conv_shape("conv2d_backward_data", s);
  BYOL_CHECK(dinp && dout && weight, "cuda: conv2d_backward_data: dinp, dout and weight must not be null");
  std::lock_guard<std::mutex> lock(mutex_);
  ConvPlan& plan = conv_plan(s);
  if (!plan.has_backward_data) choose_backward_data_algo(plan, s);
  DeviceBuffer krsc;
  const float* w = weight;
  if (needs_transpose(s)) {
    krsc = DeviceBuffer(this, size_t(s.K) * s.C * s.R * s.S * sizeof(float));
    oihw_to_krsc(krsc.f32(), weight, s.K, s.C, s.R, s.S, stream_);
    w = krsc.f32();
  }
  ensure_workspace(plan.backward_data_workspace);
  const float one = 1.0f, zero = 0.0f;
  BYOL_CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn_, &one, plan.w, w, plan.y, dout,
                                                plan.conv_backward_data, plan.backward_data_algo,
                                                workspace_, plan.backward_data_workspace, &zero,
                                                plan.x, dinp));
}

void CudaBackend::conv2d_backward_weight(float* dweight, const float* dout, const float* inp,
                                         const ConvShape& s, bool accumulate) {
  BYOL_CUDA_OP("conv2d_backward_weight");
  BYOL_CUDA_OP_WORK(conv_work(s));
  // dweight (K,C,R,S) (+)= correlation of inp (N,H,W,C) with dout (N,P,Q,K)
  check_conv_shape("conv2d_backward_weight", s);
  BYOL_CHECK(dweight && dout && inp, "cuda: conv2d_backward_weight: dweight, dout and inp must not be null");
  std::lock_guard<std::mutex> lock(mutex_);
  ConvPlan& plan = conv_plan(s);
  if (!plan.has_backward_filter) choose_backward_filter_algo(plan, s);
  ensure_workspace(plan.backward_filter_workspace);
  const float one = 1.0f, zero = 0.0f;
  if (needs_transpose(s)) {
    DeviceBuffer krsc(this, size_t(s.K) * s.C * s.R * s.S * sizeof(float));
    BYOL_CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn_, &one, plan.x, inp, plan.y, dout,
                                                    plan.conv_backward_filter, plan.backward_filter_algo,
                                                    workspace_, plan.backward_filter_workspace, &zero,
                                                    plan.w, krsc.f32()));
    krsc_to_oihw(dweight, krsc.f32(), s.K, s.C, s.R, s.S, accumulate, stream_);
  } else {
    BYOL_CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn_, &one, plan.x, inp, plan.y, dout,
                                                    plan.conv_backward_filter, plan.backward_filter_algo,
                                                    workspace_, plan.backward_filter_workspace,
                                                    accumulate ? &one : &zero, plan.w, dweight));
  }
}

}  // namespace cuda
}  // namespace byol
