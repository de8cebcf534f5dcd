// linear.cc: fully connected layers through cuBLAS (row-major tensors as column-major GEMMs).
// Contract (backend.h): inp (B, I), weight (O, I), bias (O) or null, out (B, O); dinp is
// written (=) and may be null; dweight/dbias are added when `accumulate`. GEMMs use TF32
// tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32) unless BYOL_CUDA_TF32 is 0 or conv.
#include "cuda_backend.h"
#include "kernels/kernels.h"

namespace byol {
namespace cuda {
namespace {

void check_linear_sizes(const char* op, int B, int I, int O) {
  BYOL_CHECK(B > 0 && I > 0 && O > 0, "cuda: ", op, ": expected B, I, O > 0 but received B=", B,
             " I=", I, " O=", O);
}

}  // namespace

// Column-major C (m, n) = alpha * op(A) op(B) + beta * C with alpha = 1.
void CudaBackend::gemm(bool transa, bool transb, int m, int n, int k, const float* A, int lda,
                       const float* B, int ldb, float beta, float* C, int ldc) {
  const float alpha = 1.0f;
  const cublasComputeType_t compute = tf32_matmul_ ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  BYOL_CUBLAS_CHECK(cublasGemmEx(cublas_, transa ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 transb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_32F,
                                 lda, B, CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc, compute,
                                 CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::linear_forward(float* out, const float* inp, const float* weight,
                                 const float* bias, int B, int I, int O) {
  BYOL_CUDA_OP("linear_forward");
  BYOL_CUDA_OP_WORK(linear_work(B, I, O, false));
  check_linear_sizes("linear_forward", B, I, O);
  BYOL_CHECK(out && inp && weight, "cuda: linear_forward: out, inp and weight must not be null");
  std::lock_guard<std::mutex> lock(mutex_);
  // Row-major out (B, O) is column-major out^T (O, B) = W (O, I) . inp^T (I, B).
  if (bias) broadcast_rows(out, bias, B, O, stream_);
  gemm(true, false, O, B, I, weight, I, inp, I, bias ? 1.0f : 0.0f, out, O);
}

void CudaBackend::linear_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, int B, int I, int O,
                                  bool accumulate) {
  BYOL_CUDA_OP("linear_backward");
  BYOL_CUDA_OP_WORK(linear_work(B, I, O, true));
  check_linear_sizes("linear_backward", B, I, O);
  BYOL_CHECK(dweight && dout && inp, "cuda: linear_backward: dweight, dout and inp must not be null");
  BYOL_CHECK(dinp == nullptr || weight != nullptr,
             "cuda: linear_backward: weight must not be null when dinp is asked for");
  std::lock_guard<std::mutex> lock(mutex_);
  // dinp (B, I) = dout (B, O) . W (O, I): column-major dinp^T (I, B) = W^T (I, O) . dout^T (O, B).
  if (dinp) gemm(false, false, I, B, O, weight, I, dout, O, 0.0f, dinp, I);
  // dW (O, I) = dout^T (O, B) . inp (B, I): column-major dW^T (I, O) = inp^T (I, B) . dout (B, O).
  gemm(false, true, I, O, B, inp, I, dout, O, accumulate ? 1.0f : 0.0f, dweight, I);
  if (dbias) reduce_rows(dbias, dout, 1, B, O, 1.0f, accumulate, stream_);
}

}  // namespace cuda
}  // namespace byol
