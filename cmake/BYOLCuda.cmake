# BYOLCuda.cmake: finds nvcc, cuDNN 9 and cuBLAS(Lt) and builds libbyol_cuda.so, the CUDA
# backend plugin that the core dlopen()s at run time (never linked into byol.node/byol_core).
# BYOL_CUDA: AUTO builds when everything is found, ON fails naming what is missing, OFF skips.
# cuDNN/cuBLAS are looked for in CUDNN_ROOT/CUBLAS_ROOT, the CUDA toolkit and system dirs,
# $BYOL_CACHE/cuda/nvidia (tools/setup.sh puts NVIDIA's pip wheels there) and the `nvidia`
# packages of python3's site-packages (a GPU machine may have cuDNN only inside PyTorch).

string(TOUPPER "${BYOL_CUDA}" _byol_cuda_mode)
if(_byol_cuda_mode STREQUAL "" OR _byol_cuda_mode STREQUAL "AUTO")
  set(_byol_cuda_mode AUTO)
elseif(_byol_cuda_mode MATCHES "^(ON|TRUE|YES|1|Y)$")
  set(_byol_cuda_mode ON)
elseif(_byol_cuda_mode MATCHES "^(OFF|FALSE|NO|0|N)$")
  set(_byol_cuda_mode OFF)
else()
  message(FATAL_ERROR "byol: expected BYOL_CUDA to be AUTO, ON or OFF but received '${BYOL_CUDA}'")
endif()

set(BYOL_CUDA_BUILT OFF)
if(_byol_cuda_mode STREQUAL "OFF")
  message(STATUS "byol: CUDA plugin disabled (BYOL_CUDA=OFF)")
  return()
endif()

# ---- nvcc -------------------------------------------------------------------------------
set(_byol_missing "")
set(_byol_nvcc "")
if(CMAKE_CUDA_COMPILER)
  set(_byol_nvcc "${CMAKE_CUDA_COMPILER}")
elseif(DEFINED ENV{CUDACXX} AND EXISTS "$ENV{CUDACXX}")
  set(_byol_nvcc "$ENV{CUDACXX}")
else()
  find_program(BYOL_NVCC_EXECUTABLE nvcc
    HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
  if(BYOL_NVCC_EXECUTABLE)
    set(_byol_nvcc "${BYOL_NVCC_EXECUTABLE}")
  endif()
endif()

set(_byol_cuda_version "")
if(_byol_nvcc)
  execute_process(COMMAND "${_byol_nvcc}" --version OUTPUT_VARIABLE _byol_nvcc_out
                  RESULT_VARIABLE _byol_nvcc_rc ERROR_QUIET)
  if(_byol_nvcc_rc EQUAL 0 AND _byol_nvcc_out MATCHES "release ([0-9]+)\\.([0-9]+)")
    set(_byol_cuda_major "${CMAKE_MATCH_1}")
    set(_byol_cuda_version "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    if(_byol_cuda_major LESS 12)
      list(APPEND _byol_missing "nvcc >= 12 (found ${_byol_cuda_version} at ${_byol_nvcc})")
    endif()
  else()
    list(APPEND _byol_missing "a working nvcc (${_byol_nvcc} --version failed)")
  endif()
else()
  list(APPEND _byol_missing "nvcc (set CMAKE_CUDA_COMPILER or CUDACXX, or install the CUDA toolkit in /usr/local/cuda)")
endif()

if(_byol_cuda_version)
  get_filename_component(_byol_cuda_bin "${_byol_nvcc}" DIRECTORY)
  get_filename_component(_byol_cuda_home "${_byol_cuda_bin}" DIRECTORY)
  # cuBLAS's soname major follows the CUDA major (libcublas.so.13 for CUDA 13).
  set(_byol_cublas_major "${_byol_cuda_major}")
endif()

# ---- where NVIDIA's wheels may be --------------------------------------------------------
if(DEFINED ENV{BYOL_CACHE} AND NOT "$ENV{BYOL_CACHE}" STREQUAL "")
  set(_byol_cache "$ENV{BYOL_CACHE}")
else()
  set(_byol_cache "$ENV{HOME}/.cache/byol")
endif()
set(_byol_wheel_roots "${_byol_cache}/cuda/nvidia")
find_program(BYOL_PYTHON3 python3)
if(BYOL_PYTHON3)
  # `nvidia` is a namespace package (nvidia-cudnn-cu13, nvidia-cublas, ... each add a folder).
  execute_process(
    COMMAND "${BYOL_PYTHON3}" -c "import nvidia; print(';'.join(list(nvidia.__path__)))"
    OUTPUT_VARIABLE _byol_py_nvidia OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _byol_py_rc ERROR_QUIET)
  if(_byol_py_rc EQUAL 0 AND _byol_py_nvidia)
    list(APPEND _byol_wheel_roots ${_byol_py_nvidia})
  endif()
endif()

# _byol_find_lib(<out_prefix> <header> <soname> <roots...>): sets <out>_INCLUDE (folder of the
# header) and <out>_LIB (full path of the versioned .so) from the first root holding both.
function(_byol_find_pair out header soname)
  set(_inc "")
  set(_lib "")
  foreach(root IN LISTS ARGN)
    if(NOT _inc)
      foreach(sub include "")
        if(NOT _inc AND EXISTS "${root}/${sub}/${header}")
          set(_inc "${root}/${sub}")
        endif()
      endforeach()
    endif()
    if(NOT _lib)
      foreach(sub lib lib64 lib/x86_64-linux-gnu targets/x86_64-linux/lib "")
        if(NOT _lib AND EXISTS "${root}/${sub}/${soname}")
          set(_lib "${root}/${sub}/${soname}")
        endif()
      endforeach()
    endif()
  endforeach()
  string(REGEX REPLACE "/+$" "" _inc "${_inc}")
  string(REPLACE "//" "/" _lib "${_lib}")
  set(${out}_INCLUDE "${_inc}" PARENT_SCOPE)
  set(${out}_LIB "${_lib}" PARENT_SCOPE)
endfunction()

set(_byol_system_roots /usr /usr/local)
if(_byol_cuda_home)
  list(PREPEND _byol_system_roots "${_byol_cuda_home}")
endif()

# ---- cuDNN 9 -----------------------------------------------------------------------------
set(_byol_cudnn_roots "")
foreach(hint "${CUDNN_ROOT}" "$ENV{CUDNN_ROOT}" "$ENV{CUDNN_PATH}")
  if(hint)
    list(APPEND _byol_cudnn_roots "${hint}")
  endif()
endforeach()
list(APPEND _byol_cudnn_roots ${_byol_system_roots})
foreach(root IN LISTS _byol_wheel_roots)
  list(APPEND _byol_cudnn_roots "${root}/cudnn")
endforeach()
_byol_find_pair(BYOL_CUDNN cudnn_version.h libcudnn.so.9 ${_byol_cudnn_roots})
if(BYOL_CUDNN_INCLUDE AND BYOL_CUDNN_LIB)
  file(STRINGS "${BYOL_CUDNN_INCLUDE}/cudnn_version.h" _byol_cudnn_major_line
       REGEX "^#define CUDNN_MAJOR [0-9]+")
  string(REGEX MATCH "[0-9]+$" _byol_cudnn_major "${_byol_cudnn_major_line}")
  if(NOT _byol_cudnn_major STREQUAL "9")
    list(APPEND _byol_missing "cuDNN 9 (headers in ${BYOL_CUDNN_INCLUDE} are version ${_byol_cudnn_major})")
    set(BYOL_CUDNN_LIB "")
  endif()
else()
  list(APPEND _byol_missing "cuDNN 9 (cudnn_version.h + libcudnn.so.9: pip install nvidia-cudnn-cu${_byol_cuda_major} or set CUDNN_ROOT)")
endif()

# ---- cuBLAS + cuBLASLt -------------------------------------------------------------------
if(_byol_cublas_major)
  set(_byol_cublas_roots "")
  foreach(hint "${CUBLAS_ROOT}" "$ENV{CUBLAS_ROOT}")
    if(hint)
      list(APPEND _byol_cublas_roots "${hint}")
    endif()
  endforeach()
  list(APPEND _byol_cublas_roots ${_byol_system_roots})
  foreach(root IN LISTS _byol_wheel_roots)
    # CUDA 13 wheels put every library under nvidia/cu13; CUDA 12 wheels under nvidia/cublas.
    list(APPEND _byol_cublas_roots "${root}/cu${_byol_cublas_major}" "${root}/cublas")
  endforeach()
  _byol_find_pair(BYOL_CUBLAS cublas_v2.h libcublas.so.${_byol_cublas_major} ${_byol_cublas_roots})
  _byol_find_pair(BYOL_CUBLASLT cublasLt.h libcublasLt.so.${_byol_cublas_major} ${_byol_cublas_roots})
  if(NOT (BYOL_CUBLAS_INCLUDE AND BYOL_CUBLAS_LIB AND BYOL_CUBLASLT_LIB))
    list(APPEND _byol_missing "cuBLAS ${_byol_cublas_major} (cublas_v2.h + libcublas.so.${_byol_cublas_major} + libcublasLt.so.${_byol_cublas_major}: pip install nvidia-cublas or set CUBLAS_ROOT)")
  endif()
endif()

# ---- report ------------------------------------------------------------------------------
if(_byol_cuda_version)
  set(_byol_s_nvcc "nvcc ✓ ${_byol_cuda_version}")
else()
  set(_byol_s_nvcc "nvcc ✗")
endif()
if(BYOL_CUDNN_LIB)
  set(_byol_s_cudnn "cuDNN ✓ ${BYOL_CUDNN_LIB}")
else()
  set(_byol_s_cudnn "cuDNN ✗")
endif()
if(BYOL_CUBLAS_LIB AND BYOL_CUBLASLT_LIB)
  set(_byol_s_cublas "cuBLAS ✓ ${BYOL_CUBLAS_LIB}")
else()
  set(_byol_s_cublas "cuBLAS ✗")
endif()

if(_byol_missing)
  string(REPLACE ";" "; " _byol_missing_text "${_byol_missing}")
  if(_byol_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "byol: BYOL_CUDA=ON but the CUDA plugin cannot be built; missing: ${_byol_missing_text}")
  endif()
  message(STATUS "byol: ${_byol_s_nvcc}, ${_byol_s_cudnn}, ${_byol_s_cublas} -> NOT building libbyol_cuda.so (missing: ${_byol_missing_text})")
  return()
endif()
message(STATUS "byol: ${_byol_s_nvcc}, ${_byol_s_cudnn}, ${_byol_s_cublas} -> building libbyol_cuda.so")

# ---- the plugin --------------------------------------------------------------------------
# sm_80 and sm_90 machine code plus compute_90 PTX, so newer GPUs JIT-compile the PTX.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
endif()
set(CMAKE_CUDA_COMPILER "${_byol_nvcc}")
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
enable_language(CUDA)

get_filename_component(_byol_cudnn_libdir "${BYOL_CUDNN_LIB}" DIRECTORY)
get_filename_component(_byol_cublas_libdir "${BYOL_CUBLAS_LIB}" DIRECTORY)
get_filename_component(_byol_cublaslt_libdir "${BYOL_CUBLASLT_LIB}" DIRECTORY)
find_library(BYOL_CUDART_LIB NAMES cudart libcudart.so.${_byol_cuda_major}
  HINTS "${_byol_cuda_home}/lib64" "${_byol_cuda_home}/lib" "${_byol_cuda_home}/targets/x86_64-linux/lib"
  NO_DEFAULT_PATH)
if(NOT BYOL_CUDART_LIB)
  find_library(BYOL_CUDART_LIB NAMES cudart libcudart.so.${_byol_cuda_major})
endif()
if(NOT BYOL_CUDART_LIB)
  message(FATAL_ERROR "byol: nvcc found at ${_byol_nvcc} but not the shared CUDA runtime libcudart.so under ${_byol_cuda_home}")
endif()
get_filename_component(_byol_cudart_libdir "${BYOL_CUDART_LIB}" REALPATH)
get_filename_component(_byol_cudart_libdir "${_byol_cudart_libdir}" DIRECTORY)

file(GLOB BYOL_CUDA_SOURCES CONFIGURE_DEPENDS
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda/*.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda/*.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda/kernels/*.cu)
# tensor.cc defines byol::device_name, which the Backend base class's default methods use, and
# augment.cc validate_augment_params, the parameter check augment shares with the CPU backend,
# and op_timer.cc the op-timing bookkeeping both backends share;
# compiling them in keeps the plugin self-contained (it is dlopen()ed RTLD_LOCAL).
add_library(byol_cuda SHARED ${BYOL_CUDA_SOURCES} ${CMAKE_CURRENT_SOURCE_DIR}/native/core/tensor.cc
            ${CMAKE_CURRENT_SOURCE_DIR}/native/core/op_timer.cc
            ${CMAKE_CURRENT_SOURCE_DIR}/native/core/augment.cc)
set_target_properties(byol_cuda PROPERTIES
  OUTPUT_NAME byol_cuda
  LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}"
  CUDA_RUNTIME_LIBRARY Shared
  CUDA_STANDARD 17
  CXX_VISIBILITY_PRESET hidden
  CUDA_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  # The wheels' libraries live outside every default search path: record where they were
  # found, after $ORIGIN so a copy placed next to the plugin wins.
  BUILD_RPATH "\$ORIGIN;${_byol_cudnn_libdir};${_byol_cublas_libdir};${_byol_cublaslt_libdir};${_byol_cudart_libdir}"
  INSTALL_RPATH "\$ORIGIN;${_byol_cudnn_libdir};${_byol_cublas_libdir};${_byol_cublaslt_libdir};${_byol_cudart_libdir}"
  SKIP_BUILD_RPATH OFF)
target_include_directories(byol_cuda PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/native/include
  ${CMAKE_CURRENT_SOURCE_DIR}/native/cuda
  ${BYOL_CUDNN_INCLUDE} ${BYOL_CUBLAS_INCLUDE} ${BYOL_CUBLASLT_INCLUDE}
  ${CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES})
target_compile_options(byol_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-O3 -Wall -Wno-unused-parameter>
  $<$<COMPILE_LANGUAGE:CUDA>:-O3 -Xcompiler=-Wall,-Wno-unused-parameter>)
# Full paths: the wheels ship only libcudnn.so.9 / libcublas.so.N (no unversioned link names).
# --no-undefined: the plugin must resolve everything itself (it is loaded RTLD_LOCAL).
target_link_libraries(byol_cuda PRIVATE
  "${BYOL_CUDNN_LIB}" "${BYOL_CUBLAS_LIB}" "${BYOL_CUBLASLT_LIB}" ${CMAKE_DL_LIBS}
  -Wl,--no-undefined -Wl,--enable-new-dtags)
set(BYOL_CUDA_BUILT ON)
