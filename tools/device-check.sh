#!/usr/bin/env bash
# tools/device-check.sh: the GPU check, for a machine with an NVIDIA GPU (no Node needed).
# Builds the C++ test runner and libbyol_cuda.so with CMake into build-device/ (BYOL_CUDA=ON;
# cuDNN/cuBLAS may come from $BYOL_CACHE or the machine's PyTorch site-packages), runs every
# op case on CPU and CUDA, the GPU benchmark (bench/gpu.sh: the BYOL step of byol beside
# PyTorch's, table in ${OUT:-build-device}/gpu-bench.md), a compute-sanitizer memcheck pass on a
# short filtered run, and prints nvidia-smi and a summary table (the benchmark's included).
# Exits non-zero when any step fails; stays < 8 min.
# Environment: BYOL_DEVICE_BUDGET_S (default 450) total seconds; BYOL_SANITIZER_FILTER
# (default "@cuda": every CUDA case) the test filter of the memcheck run; BYOL_DEVICE_CUDA_ARCH
# (default: the GPU's compute capability) CMAKE_CUDA_ARCHITECTURES; BYOL_DEVICE_SKIP_BUILD=1
# uses an existing build-device/; BYOL_DEVICE_BENCH=0 skips the benchmark; BYOL_BENCH_BUDGET_S
# (default 150) its seconds at most, less when the memcheck's reserve (90 s) would not fit.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BUILD="$ROOT/build-device"
BUDGET="${BYOL_DEVICE_BUDGET_S:-450}"
FILTER="${BYOL_SANITIZER_FILTER:-@cuda}"
# This GPU's architecture only (a faster build than the release set of BYOLCuda.cmake).
CAP="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')"
ARCH="${BYOL_DEVICE_CUDA_ARCH:-${CAP:-80-real;90-real;90-virtual}}"
START=$(date +%s)
LOG_DIR="${OUT:-$BUILD}/device-check-logs"
mkdir -p "$LOG_DIR"

declare -a ROWS=()
FAILED=0

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step <name> <max seconds> <command...>: runs with a timeout (capped by what is left of the
# budget), logs to $LOG_DIR/<name>.log, shows the tail, records a summary row.
step() {
  local name="$1" limit="$2"; shift 2
  local left; left=$(remaining)
  if [ "$left" -lt 10 ]; then
    ROWS+=("$(printf '%-14s %-8s %6s  %s' "$name" SKIPPED - "no time left in the ${BUDGET}s budget")")
    FAILED=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s): $*"
  local t0 rc; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  tail -n 40 "$LOG_DIR/$name.log"
  local status=ok note=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=TIMEOUT; note="killed after ${limit}s"; FAILED=1
  elif [ $rc -ne 0 ]; then status=FAIL; note="exit $rc (log: $LOG_DIR/$name.log)"; FAILED=1
  fi
  ROWS+=("$(printf '%-14s %-8s %5ss  %s' "$name" "$status" "$dt" "$note")")
  return $rc
}

note_row() { ROWS+=("$(printf '%-14s %-8s %6s  %s' "$1" "$2" - "$3")"); }

echo "=== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
else
  echo "nvidia-smi not found"
fi
NVCC="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
[ -x "$NVCC" ] && "$NVCC" --version | tail -n 2
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>/dev/null || echo "python3 torch: not importable"
echo "nproc $(nproc)"

# A GPU image may lack oneDNN (the CPU backend the CUDA ops are compared with): a carried
# build-dnnl/ (tools/device-pack-dnnl.sh) serves as its prefix for CMake and the loader.
if [ -d "$ROOT/build-dnnl/lib" ]; then
  export CMAKE_PREFIX_PATH="$ROOT/build-dnnl${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$ROOT/build-dnnl/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "oneDNN from $ROOT/build-dnnl (carried)"
fi

# ---- build ---------------------------------------------------------------------------------
if [ "${BYOL_DEVICE_SKIP_BUILD:-0}" = 1 ]; then
  note_row build skipped "BYOL_DEVICE_SKIP_BUILD=1: using $BUILD as it is"
elif ! command -v cmake >/dev/null 2>&1 || [ ! -x "$NVCC" ]; then
  if [ -x "$BUILD/native/tests/byol_tests" ] && [ -f "$BUILD/libbyol_cuda.so" ]; then
    note_row build skipped "no cmake/nvcc here: using the prebuilt $BUILD"
  else
    note_row build FAIL "no cmake or nvcc on this machine and no prebuilt $BUILD"
    FAILED=1
  fi
else
  CMAKE_ARGS=(-S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBYOL_CUDA=ON -DBYOL_TESTS=ON
              -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH")
  if step configure 120 cmake "${CMAKE_ARGS[@]}"; then
    grep "byol:" "$LOG_DIR/configure.log" || true
    # Only what runs here: not the race runner or the simulated GPU (CPU-only checks of npm test).
    step build 300 cmake --build "$BUILD" -j"$(nproc)" --target byol_tests byol_cuda byol_bench_step
  fi
fi

RUNNER="$BUILD/native/tests/byol_tests"
PLUGIN="$BUILD/libbyol_cuda.so"
if [ -f "$PLUGIN" ]; then
  echo "=== plugin dependencies"
  readelf -d "$PLUGIN" | grep -E "NEEDED|RUNPATH" || true
  if ldd "$PLUGIN" | tee "$LOG_DIR/ldd.log" | grep -q "not found"; then
    note_row plugin-deps FAIL "$(grep 'not found' "$LOG_DIR/ldd.log" | tr -s ' \t' ' ' | tr '\n' ';')"
    FAILED=1
  else
    grep -E "cudnn|cublas|cudart|libcuda" "$LOG_DIR/ldd.log"
    note_row plugin-deps ok "every NEEDED library resolves"
  fi
fi

# ---- tests ---------------------------------------------------------------------------------
export BYOL_CUDA_LIBRARY="$PLUGIN"
[ -x "$RUNNER" ] && step tests 240 "$RUNNER" --backend all
if [ -f "$LOG_DIR/tests.log" ]; then
  echo "=== graph replay, fused kernels and op timing (from the test log)"
  grep -E "^(PASS|FAIL|SKIP) (graph|fused|op_times)/|ms/step" "$LOG_DIR/tests.log" || true
fi

# ---- benchmark (before the memcheck: the benchmark is what this GPU time is mostly for; the
# memcheck keeps a reserve and takes what is left) -------------------------------------------
BENCH_MD="${OUT:-$BUILD}/gpu-bench.md"
BENCH_BIN="$BUILD/native/bench/byol_bench_step"
if [ "${BYOL_DEVICE_BENCH:-1}" = 0 ]; then
  note_row bench skipped "BYOL_DEVICE_BENCH=0"
elif [ ! -x "$BENCH_BIN" ]; then
  note_row bench FAIL "no benchmark program at $BENCH_BIN"
  FAILED=1
else
  rm -f "$BENCH_MD"
  bench_budget=$(( $(remaining) - 90 - 30 ))
  [ "$bench_budget" -gt "${BYOL_BENCH_BUDGET_S:-150}" ] && bench_budget="${BYOL_BENCH_BUDGET_S:-150}"
  if [ "$bench_budget" -lt 30 ]; then
    note_row bench SKIPPED "only ${bench_budget}s of the budget left for it"
    FAILED=1
  else
    # +20 s: gpu.sh spends its budget on runs, then writes the report.
    step bench $(( bench_budget + 20 )) env BYOL_BENCH_BUDGET_S="$bench_budget" BYOL_BENCH_OUT="${OUT:-$BUILD}" \
      bash "$ROOT/bench/gpu.sh" "$BUILD"
  fi
fi

if [ -x "$RUNNER" ]; then
  SANITIZER="$(command -v compute-sanitizer || true)"
  [ -z "$SANITIZER" ] && [ -x "$(dirname "$NVCC")/compute-sanitizer" ] && SANITIZER="$(dirname "$NVCC")/compute-sanitizer"
  if [ -n "$SANITIZER" ]; then
    step memcheck 150 env BYOL_TEST_NO_TIMING=1 "$SANITIZER" --tool memcheck --error-exitcode 97 --leak-check no \
      "$RUNNER" --backend cuda --filter "$FILTER"
  else
    note_row memcheck skipped "compute-sanitizer not found"
  fi
else
  note_row tests FAIL "no test runner at $RUNNER"
  FAILED=1
fi

# ---- summary -------------------------------------------------------------------------------
echo
echo "=== device check summary ($(( $(date +%s) - START ))s of ${BUDGET}s)"
printf '%-14s %-8s %6s  %s\n' step status time note
for row in "${ROWS[@]}"; do echo "$row"; done
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.used,memory.total,temperature.gpu --format=csv,noheader || true
fi
if [ -f "$BENCH_MD" ]; then
  echo
  cat "$BENCH_MD"
fi
if [ $FAILED -ne 0 ]; then
  echo "device check: FAILED"
  exit 1
fi
echo "device check: ok"
