// sim_cublas.cc: cublasGemmEx and the handle calls of cuBLAS on the simulated GPU
// (cublas_v2.h of this folder). GemmEx checks what cuBLAS checks (operations, sizes >= 0,
// leading dimensions at least the rows of what they describe, float types and a float compute
// type) and that A, B and C lie inside device memory of the extent their sizes and leading
// dimensions give; it computes column-major C = alpha op(A) op(B) + beta C in double, never
// reading C when beta = 0, with A and B rounded to TF32 under CUBLAS_COMPUTE_32F_FAST_TF32.
// alpha/beta are host pointers (CUBLAS_POINTER_MODE_HOST), read at the call.
#include "cublas_v2.h"

#include <algorithm>
#include <cstdio>
#include <vector>

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {

cublasStatus_t invalid(const char* what) {
  std::fprintf(stderr, "cublas (simulated): cublasGemmEx: %s\n", what);
  return CUBLAS_STATUS_INVALID_VALUE;
}

// Floats spanned by a column-major rows x cols matrix with leading dimension ld.
size_t extent(int rows, int cols, int ld) {
  if (rows == 0 || cols == 0) return 0;
  return size_t(cols - 1) * size_t(ld) + size_t(rows);
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetVersion(cublasHandle_t handle, int* version) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!version) return CUBLAS_STATUS_INVALID_VALUE;
  *version = CUBLAS_VER_MAJOR * 10000 + CUBLAS_VER_MINOR * 100 + CUBLAS_VER_PATCH;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;  // not simulated
  handle->mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && !byol_sim::is_device(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "an error occurred in the simulated cuBLAS";
  }
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
    return invalid("transa/transb must be CUBLAS_OP_N or CUBLAS_OP_T here");
  if (m < 0 || n < 0 || k < 0) return invalid("m, n and k must be >= 0");
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  // A is stored m x k (k x m when transposed), B k x n (n x k), C m x n, column-major.
  const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < std::max(1, a_rows)) return invalid("lda is smaller than the rows of A as stored");
  if (ldb < std::max(1, b_rows)) return invalid("ldb is smaller than the rows of B as stored");
  if (ldc < std::max(1, m)) return invalid("ldc is smaller than m");
  if (Atype != CUDA_R_32F || Btype != CUDA_R_32F || Ctype != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (algo != CUBLAS_GEMM_DEFAULT) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!alpha || !beta) return invalid("alpha and beta must not be null");
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const size_t a_floats = extent(a_rows, a_cols, lda), b_floats = extent(b_rows, b_cols, ldb),
               c_floats = extent(m, n, ldc);
  if (k > 0 && !byol_sim::is_device(A, a_floats * sizeof(float))) return invalid("A is not device memory of its extent");
  if (k > 0 && !byol_sim::is_device(B, b_floats * sizeof(float))) return invalid("B is not device memory of its extent");
  if (!byol_sim::is_device(C, c_floats * sizeof(float))) return invalid("C is not device memory of its extent");
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const bool tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  const auto* Af = static_cast<const float*>(A);
  const auto* Bf = static_cast<const float*>(B);
  auto* Cf = static_cast<float*>(C);
  const cudaError_t status = byol_sim::enqueue(handle->stream, [=] {
    auto read = [tf32](float v) { return double(tf32 ? byol_sim::round_tf32(v) : v); };
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; ++j) {
      std::vector<double> bcol(static_cast<size_t>(k));
      for (int l = 0; l < k; ++l) bcol[l] = read(tb ? Bf[size_t(l) * ldb + j] : Bf[size_t(j) * ldb + l]);
      for (int i = 0; i < m; ++i) {
        double acc = 0;
        if (ta) {
          const float* arow = Af + size_t(i) * lda;  // op(A)(i, l) = A(l, i)
          for (int l = 0; l < k; ++l) acc += read(arow[l]) * bcol[l];
        } else {
          for (int l = 0; l < k; ++l) acc += read(Af[size_t(l) * lda + i]) * bcol[l];
        }
        float* c = Cf + size_t(j) * ldc + i;
        const float v = float(a * acc);
        *c = b == 0.0f ? v : v + b * *c;
      }
    }
  });
  return status == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
