#!/usr/bin/env bash
# bench/gpu.sh: the BYOL training step on one GPU, byol (byol_bench_step) beside PyTorch
# (bench/torch_gpu_step.py) on the same card in the same run, for the GPU issue's two cases:
# ResNet-50 imagenet stem 224x224 batch 128 and ResNet-18 cifar stem 32x32 batch 512 (projector
# 4096/256, predictor 4096, LARS). Writes OUT_DIR/gpu-bench.jsonl (every JSON line) and
# OUT_DIR/gpu-bench.md (bench/gpu_report.py's section for BENCHMARKS.md) and prints the latter.
# Usage: bench/gpu.sh [BUILD_DIR]   (default build-device: BUILD_DIR/native/bench/byol_bench_step
#        and BUILD_DIR/libbyol_cuda.so, as tools/device-check.sh builds them)
# Environment: BYOL_BENCH_OUT output folder (default $OUT, else BUILD_DIR); BYOL_BENCH_BUDGET_S
# seconds for all runs (default 170): runs go in priority order (TF32 and bf16 of both cases,
# then fp32) and those that no longer fit are recorded as skipped; BYOL_BENCH_WARMUP (3),
# BYOL_BENCH_STEPS (15), BYOL_BENCH_MAX_SECONDS (5) per run; BYOL_BENCH_OP_TIMES (3) eager steps
# timed op by op after byol's TF32 runs, and steps under torch.profiler after PyTorch's TF32 runs
# (0: none); PYTHON (python3);
# BYOL_BENCH_SMOKE=1 checks this pipeline on a machine without a GPU: the CPU, tiny models
# (byol's TF32 rows then record the CPU backend's refusal).
# Exit 0 when every run gave a result (byol's "not supported" counts: the backend lacks an op,
# as the test runner reports it), 1 when one failed or was skipped (the table says which), 2 when
# no table could be written.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD="$(cd "${1:-build-device}" 2>/dev/null && pwd || echo "${1:-build-device}")"
OUT_DIR="${BYOL_BENCH_OUT:-${OUT:-$BUILD}}"
BUDGET="${BYOL_BENCH_BUDGET_S:-170}"
WARMUP="${BYOL_BENCH_WARMUP:-3}"
STEPS="${BYOL_BENCH_STEPS:-15}"
MAX_SECONDS="${BYOL_BENCH_MAX_SECONDS:-5}"
OP_TIMES="${BYOL_BENCH_OP_TIMES:-3}"
PY="${PYTHON:-python3}"
BIN="$BUILD/native/bench/byol_bench_step"
JSONL="$OUT_DIR/gpu-bench.jsonl"
MD="$OUT_DIR/gpu-bench.md"
LOGS="$OUT_DIR/gpu-bench-logs"
mkdir -p "$OUT_DIR" "$LOGS"
: >"$JSONL"
START=$(date +%s)
FAILED=0

[ -f "$BUILD/libbyol_cuda.so" ] && export BYOL_CUDA_LIBRARY="${BYOL_CUDA_LIBRARY:-$BUILD/libbyol_cuda.so}"
NVCC="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
"$PY" bench/gpu_report.py --machine --nvcc "$NVCC" >>"$JSONL" || echo "gpu.sh: no machine line (python3 failed)"

# The two cases; both programs take the same model flags (pred-hidden defaults to hidden).
DEVICE=cuda:0
declare -A CASE_FLAGS=(
  [r50]="--arch resnet50 --stem imagenet --size 224 --batch 128 --width 1 --hidden 4096 --out 256"
  [r18]="--arch resnet18 --stem cifar --size 32 --batch 512 --width 1 --hidden 4096 --out 256"
)
if [ "${BYOL_BENCH_SMOKE:-0}" = 1 ]; then
  DEVICE=cpu
  CASE_FLAGS[r50]="--arch resnet50 --stem imagenet --size 32 --batch 4 --width 0.125 --hidden 64 --out 32"
  CASE_FLAGS[r18]="--arch resnet18 --stem cifar --size 16 --batch 8 --width 0.125 --hidden 64 --out 32"
  WARMUP="${BYOL_BENCH_WARMUP:-1}" STEPS="${BYOL_BENCH_STEPS:-2}" MAX_SECONDS="${BYOL_BENCH_MAX_SECONDS:-1}"
fi

# failure_line <case> <engine> <variant> <message>: the JSON line of a run without its own, with
# the config fields gpu_report.py groups by. The message is stripped of quotes, backslashes and
# control characters so that it is a valid JSON string as printed.
failure_line() {
  local flags=(${CASE_FLAGS[$1]}) fields="" i
  for ((i = 0; i < ${#flags[@]}; i += 2)); do
    case "${flags[i]}" in
      --arch | --stem) fields+="\"${flags[i]#--}\":\"${flags[i + 1]}\"," ;;
      *) fields+="\"${flags[i]#--}\":${flags[i + 1]}," ;;
    esac
  done
  local hidden="${fields#*\"hidden\":}"; hidden="${hidden%%,*}"
  local msg; msg="$(printf '%s' "$4" | tr -d '"\\' | tr -c '[:print:]' ' ' | cut -c1-300)"
  printf '{"engine":"%s","variant":"%s",%s"channels":3,"pred_hidden":%s,"optimizer":"lars","error":"%s","not_supported":false}\n' \
    "$2" "$3" "$fields" "$hidden" "$msg" >>"$JSONL"
}

# run <case> <engine> <comma-separated variants> <cap seconds>: one process (byol: one variant;
# PyTorch: its variants in turn), capped by what is left of the budget. Lines it printed are
# kept even when it is killed; a variant without a line gets a failure line.
run() {
  local case="$1" engine="$2" variants="$3" cap="$4"
  local name="${engine}-${case}-${variants//,/-}"
  local left=$(( BUDGET - ($(date +%s) - START) ))
  local v
  if [ "$left" -lt 15 ]; then
    echo "=== $name: skipped (${left}s left of the ${BUDGET}s budget)"
    for v in ${variants//,/ }; do failure_line "$case" "$engine" "$v" "skipped: the ${BUDGET}s benchmark budget was spent"; done
    FAILED=1
    return
  fi
  local limit=$cap
  [ "$limit" -gt "$left" ] && limit=$left
  local cmd
  if [ "$engine" = byol ]; then
    cmd=("$BIN" --device "$DEVICE" --variant "${variants%-eager}")
    # <variant>-eager: the same run without CUDA graph replay (what graphs gain).
    [ "$variants" != "${variants%-eager}" ] && cmd+=(--graphs off)
    # The TF32 runs then time OP_TIMES more steps op by op (the report's "where the step goes");
    # the smoke run's fp32 runs too (its TF32 rows are the CPU's refusal).
    if [ "$OP_TIMES" -gt 0 ] && { [ "$variants" = tf32 ] || { [ "$DEVICE" = cpu ] && [ "$variants" = fp32 ]; }; }; then
      cmd+=(--op-times "$OP_TIMES")
    fi
  else
    cmd=("$PY" bench/torch_gpu_step.py --device "$DEVICE" --variants "$variants")
    # PyTorch's TF32 run: the same number of steps under torch.profiler, per aten op.
    [ "$variants" != fp32 ] && [ "$OP_TIMES" -gt 0 ] && cmd+=(--op-times "$OP_TIMES" --op-times-variants tf32)
  fi
  cmd+=(${CASE_FLAGS[$case]} --warmup "$WARMUP" --steps "$STEPS" --max-seconds "$MAX_SECONDS")
  echo "=== $name (limit ${limit}s): ${cmd[*]}"
  local t0=$(date +%s) rc
  timeout --kill-after=5 "$limit" "${cmd[@]}" >"$LOGS/$name.out" 2>"$LOGS/$name.log"
  rc=$?
  grep '^{' "$LOGS/$name.out" >>"$JSONL"
  echo "    exit $rc after $(( $(date +%s) - t0 ))s"
  # byol_bench_step exits 3 when the backend lacks an op of the step: reported in the table
  # like the test runner's "not supported" skips, not a failure of the benchmark.
  if [ "$rc" -ne 0 ] && ! { [ "$engine" = byol ] && [ "$rc" -eq 3 ]; }; then FAILED=1; fi
  for v in ${variants//,/ }; do
    if ! grep -Eq "\"variant\": ?\"${v%-eager}\"" "$LOGS/$name.out"; then
      local why="exit $rc without a result line" last
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then why="killed after its ${limit}s limit"; fi
      last="$(tail -n 1 "$LOGS/$name.log")"
      failure_line "$case" "$engine" "$v" "$why${last:+; last log line: $last}"
      FAILED=1
    fi
  done
}

if [ ! -x "$BIN" ]; then
  echo "gpu.sh: $BIN not found (build with: cmake -S . -B $BUILD -DBYOL_CUDA=ON && cmake --build $BUILD)"
  for c in r50 r18; do for v in tf32 fp32; do failure_line "$c" byol "$v" "byol_bench_step not built"; done; done
  FAILED=1
fi

# Priority order: what the targets compare first, fp32 last. Caps: warm-up (cuDNN algorithm
# search) + MAX_SECONDS of steps + start-up, with room; the budget is the real limit.
[ -x "$BIN" ] && run r50 byol tf32 60
run r50 pytorch tf32,bf16 100
[ -x "$BIN" ] && run r18 byol tf32 45
run r18 pytorch tf32,bf16 70
[ -x "$BIN" ] && run r50 byol fp32 60
run r50 pytorch fp32 60
[ -x "$BIN" ] && run r18 byol fp32 45
run r18 pytorch fp32 45
# Last: the small-image case without graph replay, to show what the graphs gain.
[ -x "$BIN" ] && run r18 byol tf32-eager 45

echo "=== report ($(( $(date +%s) - START ))s of ${BUDGET}s)"
if ! "$PY" bench/gpu_report.py "$JSONL" --out "$MD" --command "bench/gpu.sh (steps $STEPS, warm-up $WARMUP, max ${MAX_SECONDS}s per variant)"; then
  echo "gpu.sh: no report (see $JSONL)"
  exit 2
fi
cat "$MD"
echo "gpu.sh: wrote $MD and $JSONL"
exit $FAILED
