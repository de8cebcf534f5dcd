// sim_cudnn.cc: cuDNN's legacy convolution API on the simulated GPU (cudnn.h of this folder).
// It checks what cuDNN checks of the calls libbyol_cuda.so makes, and computes in double:
//   - descriptors: sizes > 0, float data; NHWC tensors with NHWC (KRSC) filters, which is
//     all the backend uses (NCHW is refused as unsupported here, not by cuDNN); the filter's C
//     must be the input's, the output descriptor the size GetConvolution2dForwardOutputDim
//     gives; cross-correlation, dilation 1;
//   - algorithm lists: Get*_v7 and Find* return a few algorithms with cuDNN's numbering, the
//     workspace each needs and whether it is deterministic (ALGO_0 of the backward passes is
//     not, as in cuDNN), in different orders; Find* fails inside a stream capture (it runs and
//     synchronizes) and invalidates the capture;
//   - execution: every pointer must lie inside device memory of its tensor's size, the
//     workspace must be at least what the algorithm needs (its bytes are overwritten, so a
//     workspace that aliases live data shows), alpha/beta are read at the call (host
//     pointers), beta = 0 never reads the output (NaN there stays harmless), and with TF32
//     allowed (math type other than CUDNN_FMA_MATH) the inputs are rounded to TF32 first.
// A failure returns cuDNN's status and leaves a message for cudnnGetLastErrorString.
#include "cudnn.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

thread_local std::string t_message;

cudnnStatus_t fail(cudnnStatus_t status, const std::string& message) {
  t_message = "cudnn (simulated): " + message;
  return status;
}

}  // namespace

struct cudnnContext {
  cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
  bool set = false;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnFilterStruct {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
  int k = 0, c = 0, r = 0, s = 0;
};
struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0, u = 1, v = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace {

// One convolution's sizes: x (N,H,W,C), w (K,R,S,C), y (N,P,Q,K).
struct Geometry {
  int N, H, W, C, K, R, S, P, Q, pad_h, pad_w, u, v;
  bool tf32;
  size_t x_floats() const { return size_t(N) * H * W * C; }
  size_t w_floats() const { return size_t(K) * R * S * C; }
  size_t y_floats() const { return size_t(N) * P * Q * K; }
};

cudnnStatus_t geometry(const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                       const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y, Geometry* g) {
  if (!x || !w || !conv || !y) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "a descriptor is null");
  if (!x->set || !y->set || !w->set || !conv->set)
    return fail(CUDNN_STATUS_BAD_PARAM, "a descriptor was created but never set");
  if (x->type != CUDNN_DATA_FLOAT || y->type != CUDNN_DATA_FLOAT || w->type != CUDNN_DATA_FLOAT ||
      conv->compute != CUDNN_DATA_FLOAT)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, "only float tensors, filters and compute are simulated");
  if (x->format != CUDNN_TENSOR_NHWC || y->format != CUDNN_TENSOR_NHWC || w->format != CUDNN_TENSOR_NHWC)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, "only NHWC tensors with NHWC (KRSC) filters are simulated");
  if (conv->mode != CUDNN_CROSS_CORRELATION || conv->dil_h != 1 || conv->dil_w != 1)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, "only cross-correlation without dilation is simulated");
  if (w->c != x->c)
    return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "the filter has C=" + std::to_string(w->c) +
                                                           " but the input tensor C=" + std::to_string(x->c));
  const int P = (x->h + 2 * conv->pad_h - w->r) / conv->u + 1, Q = (x->w + 2 * conv->pad_w - w->s) / conv->v + 1;
  if (y->n != x->n || y->c != w->k || y->h != P || y->w != Q)
    return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                "the output descriptor is (n=" + std::to_string(y->n) + ", c=" + std::to_string(y->c) + ", h=" +
                    std::to_string(y->h) + ", w=" + std::to_string(y->w) + ") but the convolution gives (" +
                    std::to_string(x->n) + ", " + std::to_string(w->k) + ", " + std::to_string(P) + ", " +
                    std::to_string(Q) + ")");
  *g = Geometry{x->n, x->h, x->w, x->c, w->k, w->r, w->s, P, Q, conv->pad_h, conv->pad_w, conv->u, conv->v,
                conv->math != CUDNN_FMA_MATH};
  return CUDNN_STATUS_SUCCESS;
}

enum class Pass { forward, backward_data, backward_filter };

// The workspace an algorithm needs (made-up sizes of the right kind: none, an index table, an
// unrolled input).
size_t workspace_for(Pass pass, int algo, const Geometry& g) {
  const size_t table = 8 * size_t(g.R) * g.S * g.C + 256;
  const size_t unrolled = sizeof(float) * size_t(g.N) * g.P * g.Q * g.R * g.S * g.C;
  switch (pass) {
    case Pass::forward:
      return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ? 0
             : algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM       ? unrolled
                                                              : table;
    case Pass::backward_data: return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 ? 0 : table;
    case Pass::backward_filter:
      return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 ? 0
             : algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ? sizeof(float) * g.w_floats()
                                                           : table;
  }
  return 0;
}

bool deterministic(Pass pass, int algo) {
  if (pass == Pass::backward_data) return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
  if (pass == Pass::backward_filter)
    return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 && algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
  return true;
}

// The algorithms offered, best first: the heuristic's order (Get*_v7) or the measured one (Find*).
std::vector<int> offered(Pass pass, bool find) {
  switch (pass) {
    case Pass::forward:
      return find ? std::vector<int>{CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                     CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM}
                  : std::vector<int>{CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                                     CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_GEMM};
    case Pass::backward_data:
      return find ? std::vector<int>{CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1}
                  : std::vector<int>{CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0};
    case Pass::backward_filter:
      return find ? std::vector<int>{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1}
                  : std::vector<int>{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3};
  }
  return {};
}

// Get*_v7 (find = false) and Find* of every pass: x/w/y are the forward roles (input, filter,
// output) of the descriptors each call names.
template <typename Perf, typename Algo>
cudnnStatus_t list(cudnnHandle_t handle, Pass pass, bool find, const cudnnTensorDescriptor_t x,
                   const cudnnFilterDescriptor_t w, const cudnnConvolutionDescriptor_t conv,
                   const cudnnTensorDescriptor_t y, int requested, int* returned, Perf* perf) {
  Geometry g;
  if (cudnnStatus_t s = geometry(x, w, conv, y, &g)) return s;
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "the handle is null");
  if (requested <= 0 || !returned || !perf)
    return fail(CUDNN_STATUS_BAD_PARAM, "expected requestedAlgoCount > 0 and non-null returnedAlgoCount, perfResults");
  if (find && byol_sim::capturing(handle->stream)) {
    byol_sim::invalidate_capture(handle->stream);
    return fail(CUDNN_STATUS_EXECUTION_FAILED,
                "cudnnFind* runs and times every algorithm, which a stream capture cannot hold");
  }
  const std::vector<int> algos = offered(pass, find);
  const int n = std::min<int>(requested, int(algos.size()));
  for (int i = 0; i < n; ++i) {
    perf[i] = Perf{};
    perf[i].algo = static_cast<Algo>(algos[i]);
    perf[i].status = CUDNN_STATUS_SUCCESS;
    perf[i].time = float(i + 1);
    perf[i].memory = workspace_for(pass, algos[i], g);
    perf[i].determinism = deterministic(pass, algos[i]) ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
    perf[i].mathType = conv->math == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  }
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

// The inputs as the math unit reads them: TF32-rounded copies, or the originals.
const float* as_read(const float* p, size_t n, bool tf32, std::vector<float>& copy) {
  if (!tf32) return p;
  copy.assign(p, p + n);
  for (float& v : copy) v = byol_sim::round_tf32(v);
  return copy.data();
}

void store(float* out, double acc, float alpha, float beta) {
  const float v = float(alpha * acc);
  *out = beta == 0.0f ? v : v + beta * *out;
}

void forward(const Geometry& g, const float* x_in, const float* w_in, float* y, float alpha, float beta) {
  std::vector<float> xc, wc;
  const float* x = as_read(x_in, g.x_floats(), g.tf32, xc);
  const float* w = as_read(w_in, g.w_floats(), g.tf32, wc);
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < g.N; ++n)
    for (int p = 0; p < g.P; ++p)
      for (int q = 0; q < g.Q; ++q)
        for (int k = 0; k < g.K; ++k) {
          double acc = 0;
          for (int r = 0; r < g.R; ++r) {
            const int h = p * g.u - g.pad_h + r;
            if (h < 0 || h >= g.H) continue;
            for (int s = 0; s < g.S; ++s) {
              const int ww = q * g.v - g.pad_w + s;
              if (ww < 0 || ww >= g.W) continue;
              const float* xr = x + ((size_t(n) * g.H + h) * g.W + ww) * g.C;
              const float* wr = w + ((size_t(k) * g.R + r) * g.S + s) * g.C;
              for (int c = 0; c < g.C; ++c) acc += double(xr[c]) * wr[c];
            }
          }
          store(y + ((size_t(n) * g.P + p) * g.Q + q) * g.K + k, acc, alpha, beta);
        }
}

void backward_data(const Geometry& g, const float* w_in, const float* dy_in, float* dx, float alpha, float beta) {
  std::vector<float> wc, dyc;
  const float* w = as_read(w_in, g.w_floats(), g.tf32, wc);
  const float* dy = as_read(dy_in, g.y_floats(), g.tf32, dyc);
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < g.N; ++n)
    for (int h = 0; h < g.H; ++h) {
      std::vector<double> acc(g.C);
      for (int ww = 0; ww < g.W; ++ww) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int r = 0; r < g.R; ++r) {
          const int pu = h + g.pad_h - r;
          if (pu < 0 || pu % g.u) continue;
          const int p = pu / g.u;
          if (p >= g.P) continue;
          for (int s = 0; s < g.S; ++s) {
            const int qv = ww + g.pad_w - s;
            if (qv < 0 || qv % g.v) continue;
            const int q = qv / g.v;
            if (q >= g.Q) continue;
            const float* dyr = dy + ((size_t(n) * g.P + p) * g.Q + q) * g.K;
            for (int k = 0; k < g.K; ++k) {
              const double d = dyr[k];
              const float* wr = w + ((size_t(k) * g.R + r) * g.S + s) * g.C;
              for (int c = 0; c < g.C; ++c) acc[c] += d * wr[c];
            }
          }
        }
        float* out = dx + ((size_t(n) * g.H + h) * g.W + ww) * g.C;
        for (int c = 0; c < g.C; ++c) store(out + c, acc[c], alpha, beta);
      }
    }
}

void backward_filter(const Geometry& g, const float* x_in, const float* dy_in, float* dw, float alpha, float beta) {
  std::vector<float> xc, dyc;
  const float* x = as_read(x_in, g.x_floats(), g.tf32, xc);
  const float* dy = as_read(dy_in, g.y_floats(), g.tf32, dyc);
  const size_t per_k = size_t(g.R) * g.S * g.C;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < g.K; ++k) {
    std::vector<double> acc(per_k, 0.0);
    for (int n = 0; n < g.N; ++n)
      for (int p = 0; p < g.P; ++p)
        for (int q = 0; q < g.Q; ++q) {
          const double d = dy[((size_t(n) * g.P + p) * g.Q + q) * g.K + k];
          if (d == 0) continue;
          for (int r = 0; r < g.R; ++r) {
            const int h = p * g.u - g.pad_h + r;
            if (h < 0 || h >= g.H) continue;
            for (int s = 0; s < g.S; ++s) {
              const int ww = q * g.v - g.pad_w + s;
              if (ww < 0 || ww >= g.W) continue;
              const float* xr = x + ((size_t(n) * g.H + h) * g.W + ww) * g.C;
              double* a = acc.data() + (size_t(r) * g.S + s) * g.C;
              for (int c = 0; c < g.C; ++c) a[c] += d * xr[c];
            }
          }
        }
    for (size_t i = 0; i < per_k; ++i) store(dw + k * per_k + i, acc[i], alpha, beta);
  }
}

// One execution of `pass`: x, w and y are the forward roles (input, filter, output) of the
// buffers the call names (backward data writes x, backward filter writes w). Checks what cuDNN
// checks, then enqueues the computation after scribbling over the workspace the algorithm uses.
cudnnStatus_t execute(cudnnHandle_t handle, Pass pass, int algo, const void* alpha, const void* beta,
                      const cudnnTensorDescriptor_t x_desc, const void* x, const cudnnFilterDescriptor_t w_desc,
                      const void* w, const cudnnTensorDescriptor_t y_desc, const void* y,
                      const cudnnConvolutionDescriptor_t conv, void* workspace, size_t workspace_bytes) {
  Geometry g;
  if (cudnnStatus_t s = geometry(x_desc, w_desc, conv, y_desc, &g)) return s;
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "the handle is null");
  if (!alpha || !beta) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "alpha and beta must not be null");
  const int algo_count = pass == Pass::forward         ? int(CUDNN_CONVOLUTION_FWD_ALGO_COUNT)
                         : pass == Pass::backward_data ? int(CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)
                                                       : int(CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
  if (algo < 0 || algo >= algo_count) return fail(CUDNN_STATUS_BAD_PARAM, "algorithm " + std::to_string(algo) + " does not exist");
  const struct {
    const void* p;
    const char* name;
    size_t floats;
  } buffers[] = {{x, pass == Pass::backward_data ? "dx" : "x", g.x_floats()},
                 {w, pass == Pass::backward_filter ? "dw" : "w", g.w_floats()},
                 {y, pass == Pass::forward ? "y" : "dy", g.y_floats()}};
  for (const auto& b : buffers)
    if (!byol_sim::is_device(b.p, b.floats * sizeof(float)))
      return fail(CUDNN_STATUS_BAD_PARAM, std::string(b.name) + " does not point to " + std::to_string(b.floats) +
                                              " floats of device memory");
  const size_t need = workspace_for(pass, algo, g);
  if (workspace_bytes < need)
    return fail(CUDNN_STATUS_BAD_PARAM_INSUFFICIENT_WORKSPACE, "algorithm " + std::to_string(algo) + " needs " +
                                                                   std::to_string(need) + " bytes of workspace but " +
                                                                   std::to_string(workspace_bytes) + " were given");
  if (need > 0 && !byol_sim::is_device(workspace, need))
    return fail(CUDNN_STATUS_BAD_PARAM, "the workspace does not point to " + std::to_string(need) +
                                            " bytes of device memory");
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  auto* xf = static_cast<float*>(const_cast<void*>(x));
  auto* wf = static_cast<float*>(const_cast<void*>(w));
  auto* yf = static_cast<float*>(const_cast<void*>(y));
  const cudaError_t status = byol_sim::enqueue(handle->stream, [=] {
    if (need) std::memset(workspace, 0xff, need);
    if (pass == Pass::forward)
      forward(g, xf, wf, yf, a, b);
    else if (pass == Pass::backward_data)
      backward_data(g, wf, yf, xf, a, b);
    else
      backward_filter(g, xf, yf, wf, a, b);
  });
  if (status != cudaSuccess) return fail(CUDNN_STATUS_EXECUTION_FAILED, "the stream's capture was invalidated");
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* cudnnGetErrorString(cudnnStatus_t status) {
  switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH: return "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
    case CUDNN_STATUS_BAD_PARAM_INSUFFICIENT_WORKSPACE: return "CUDNN_STATUS_BAD_PARAM_INSUFFICIENT_WORKSPACE";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN: return "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

void cudnnGetLastErrorString(char* message, size_t max_size) {
  if (!message || max_size == 0) return;
  std::snprintf(message, max_size, "%s", t_message.c_str());
  t_message.clear();
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreate: handle is null");
  *handle = new cudnnContext();
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetStream: handle is null");
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* desc) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreateTensorDescriptor: null");
  *desc = new cudnnTensorStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetTensor4dDescriptor: null descriptor");
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensor4dDescriptor: every size must be > 0");
  if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetTensor4dDescriptor: unknown format");
  if (int64_t(n) * c * h * w > INT32_MAX)
    return fail(CUDNN_STATUS_NOT_SUPPORTED, "cudnnSetTensor4dDescriptor: more than 2^31 elements");
  *desc = cudnnTensorStruct{true, format, type, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* desc) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreateFilterDescriptor: null");
  *desc = new cudnnFilterStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetFilter4dDescriptor: null descriptor");
  if (k <= 0 || c <= 0 || h <= 0 || w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: every size must be > 0");
  if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetFilter4dDescriptor: unknown format");
  *desc = cudnnFilterStruct{true, type, format, k, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* desc) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreateConvolutionDescriptor: null");
  *desc = new cudnnConvolutionStruct();
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) {
  delete desc;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetConvolution2dDescriptor: null descriptor");
  if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: pads must be >= 0, strides and dilations > 0");
  if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolution2dDescriptor: unknown mode");
  const cudnnMathType_t math = desc->math;
  *desc = cudnnConvolutionStruct{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, compute_type, math};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math) {
  if (!desc) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnSetConvolutionMathType: null descriptor");
  if (math != CUDNN_DEFAULT_MATH && math != CUDNN_TENSOR_OP_MATH && math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
      math != CUDNN_FMA_MATH)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: unknown math type");
  desc->math = math;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                                    int* n, int* c, int* h, int* w_out) {
  if (!conv || !x || !w || !n || !c || !h || !w_out)
    return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnGetConvolution2dForwardOutputDim: null argument");
  if (!conv->set || !x->set || !w->set)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetConvolution2dForwardOutputDim: a descriptor was never set");
  if (w->c != x->c)
    return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "cudnnGetConvolution2dForwardOutputDim: filter C != input C");
  const int eff_r = (w->r - 1) * conv->dil_h + 1, eff_s = (w->s - 1) * conv->dil_w + 1;
  if (x->h + 2 * conv->pad_h < eff_r || x->w + 2 * conv->pad_w < eff_s)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetConvolution2dForwardOutputDim: the filter does not fit the padded input");
  *n = x->n;
  *c = w->k;
  *h = (x->h + 2 * conv->pad_h - eff_r) / conv->u + 1;
  *w_out = (x->w + 2 * conv->pad_w - eff_s) / conv->v + 1;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t y, const int requested,
                                                     int* returned, cudnnConvolutionFwdAlgoPerf_t* perf) {
  return list<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      handle, Pass::forward, false, x, w, conv, y, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
                                                   const cudnnFilterDescriptor_t w,
                                                   const cudnnConvolutionDescriptor_t conv,
                                                   const cudnnTensorDescriptor_t y, const int requested,
                                                   int* returned, cudnnConvolutionFwdAlgoPerf_t* perf) {
  return list<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      handle, Pass::forward, true, x, w, conv, y, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle, const cudnnFilterDescriptor_t w,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t conv,
                                                          const cudnnTensorDescriptor_t dx, const int requested,
                                                          int* returned, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  return list<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      handle, Pass::backward_data, false, dx, w, conv, dy, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t handle, const cudnnFilterDescriptor_t w,
                                                        const cudnnTensorDescriptor_t dy,
                                                        const cudnnConvolutionDescriptor_t conv,
                                                        const cudnnTensorDescriptor_t dx, const int requested,
                                                        int* returned, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
  return list<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      handle, Pass::backward_data, true, dx, w, conv, dy, requested, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
                                                            const cudnnTensorDescriptor_t dy,
                                                            const cudnnConvolutionDescriptor_t conv,
                                                            const cudnnFilterDescriptor_t dw, const int requested,
                                                            int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  return list<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      handle, Pass::backward_filter, false, x, dw, conv, dy, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
                                                          const cudnnTensorDescriptor_t dy,
                                                          const cudnnConvolutionDescriptor_t conv,
                                                          const cudnnFilterDescriptor_t dw, const int requested,
                                                          int* returned, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
  return list<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      handle, Pass::backward_filter, true, x, dw, conv, dy, requested, returned, perf);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t x_desc,
                                      const void* x, const cudnnFilterDescriptor_t w_desc, const void* w,
                                      const cudnnConvolutionDescriptor_t conv, cudnnConvolutionFwdAlgo_t algo,
                                      void* workspace, size_t workspace_bytes, const void* beta,
                                      const cudnnTensorDescriptor_t y_desc, void* y) {
  return execute(handle, Pass::forward, algo, alpha, beta, x_desc, x, w_desc, w, y_desc, y, conv, workspace,
                 workspace_bytes);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha, const cudnnFilterDescriptor_t w_desc,
                                           const void* w, const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                           const cudnnConvolutionDescriptor_t conv, cudnnConvolutionBwdDataAlgo_t algo,
                                           void* workspace, size_t workspace_bytes, const void* beta,
                                           const cudnnTensorDescriptor_t dx_desc, void* dx) {
  return execute(handle, Pass::backward_data, algo, alpha, beta, dx_desc, dx, w_desc, w, dy_desc, dy, conv, workspace,
                 workspace_bytes);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha,
                                             const cudnnTensorDescriptor_t x_desc, const void* x,
                                             const cudnnTensorDescriptor_t dy_desc, const void* dy,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void* workspace,
                                             size_t workspace_bytes, const void* beta,
                                             const cudnnFilterDescriptor_t dw_desc, void* dw) {
  return execute(handle, Pass::backward_filter, algo, alpha, beta, x_desc, x, dw_desc, dw, dy_desc, dy, conv,
                 workspace, workspace_bytes);
}
