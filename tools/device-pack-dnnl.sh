#!/usr/bin/env bash
# tools/device-pack-dnnl.sh: copies this machine's oneDNN (Debian libdnnl-dev: headers, the
# library as a real file, and libOpenCL.so.1, which Debian's libdnnl needs) into build-dnnl/,
# for a GPU machine whose image has CUDA and PyTorch but no oneDNN: carry build-dnnl/ there and
# tools/device-check.sh puts it on CMAKE_PREFIX_PATH and LD_LIBRARY_PATH. ~40 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build-dnnl
rm -rf "$OUT" && mkdir -p "$OUT/include/oneapi" "$OUT/lib"
cp -r /usr/include/oneapi/dnnl "$OUT/include/oneapi/"
for f in /usr/include/dnnl*.h /usr/include/dnnl*.hpp; do cp "$f" "$OUT/include/"; done
lib="$(readlink -f "$(ldconfig -p | awk '/libdnnl.so.2 .*x86-64/ {print $NF; exit}')")"
cp "$lib" "$OUT/lib/libdnnl.so.2"
ln -s libdnnl.so.2 "$OUT/lib/libdnnl.so"   # the link name find_library looks for
ocl="$(readlink -f "$(ldconfig -p | awk '/libOpenCL.so.1 .*x86-64/ {print $NF; exit}')")"
cp "$ocl" "$OUT/lib/libOpenCL.so.1"
du -sh "$OUT"
