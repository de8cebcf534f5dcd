#!/usr/bin/env bash
# tools/setup.sh: prepares a fresh Debian 12 machine to build, test and run byol.
#  - Debian packages: oneDNN (libdnnl-dev), libjpeg (libjpeg-dev: image folders' JPEG fast path),
#    a C++ toolchain, cmake, real Fashion-MNIST
#  - NVIDIA cuDNN 9 + cuBLAS 13 headers/libraries from their pip wheels into a cache folder,
#    so that CMake can compile and link libbyol_cuda.so with /usr/local/cuda's nvcc
#  - npm ci: builds byol.node (node-gyp) and compiles the TypeScript to dist/
#  - cmake: the C++ test runner and, when nvcc is present, the CUDA plugin
# Idempotent: a second run only checks. BYOL_CACHE overrides the cache folder.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${BYOL_CACHE:-$HOME/.cache/byol}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need_apt=()
for pkg in libdnnl-dev libjpeg-dev dataset-fashion-mnist cmake g++ make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "setup: oneDNN ✓ $(dpkg -s libdnnl-dev | sed -n 's/^Version: //p')"

# cuDNN + cuBLAS wheels (headers and .so.N) for building the CUDA plugin; only with nvcc.
NVCC="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
if [ -x "$NVCC" ]; then
  if [ ! -f "$CACHE/cuda/nvidia/cudnn/include/cudnn.h" ] || [ ! -f "$CACHE/cuda/nvidia/cu13/include/cublas_v2.h" ]; then
    echo "setup: fetching cuDNN and cuBLAS wheels into $CACHE/cuda"
    python3 -m pip install -q --disable-pip-version-check --retries 1 --no-deps --target "$CACHE/cuda" \
      nvidia-cudnn-cu13 nvidia-cublas
  fi
  echo "setup: nvcc ✓ ($NVCC), cuDNN/cuBLAS wheels ✓ ($CACHE/cuda)"
else
  echo "setup: nvcc ✗ (no /usr/local/cuda): the CUDA plugin will not be built"
fi

# PyTorch is needed only to regenerate fixtures and run benchmarks, not to test.
if [ "${BYOL_WITH_TORCH:-0}" = 1 ]; then
  python3 -m pip install -q --disable-pip-version-check --retries 1 --target "$CACHE/py" \
    torch==2.13.0+cpu safetensors numpy pillow
fi

# node-gyp needs Node's headers; without network it cannot download them, so point it at
# the headers that ship with the installed Node (official builds and Debian's nodejs-dev).
NODE_PREFIX="$(dirname "$(dirname "$(command -v node)")")"
if [ -z "${npm_config_nodedir:-}" ] && [ -f "$NODE_PREFIX/include/node/node_api.h" ]; then
  export npm_config_nodedir="$NODE_PREFIX"
fi

npm ci
npm run build:cmake
echo "setup: done"
