# BYOLCuda.cmake: finds nvcc, cuDNN 9 and cuBLAS 13 and builds libbyol_cuda.so. (stub)
message(STATUS "byol: CUDA plugin not configured yet")
