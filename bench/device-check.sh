#!/usr/bin/env bash
# bench/device-check.sh OUTDIR: the GPU checks of gpu/, on a machine with an NVIDIA GPU and the
# CUDA toolkit (nvcc) but none of the Debian packages the kvferry build needs. No network.
#
# Run from the repository root. It
#   1. records the machine: nvidia-smi, nvcc/cmake/compiler versions, the commit (OUTDIR/env.txt,
#      OUTDIR/nvidia-smi.txt);
#   2. configures and builds the standalone gpu project (gpu/standalone) with CMake and nvcc in
#      $KVFERRY_GPU_BUILD_DIR (default build-gpu, outside OUTDIR) for CUDA architecture
#      $KVFERRY_CUDA_ARCH (default 90: H100/H200); without cmake it builds the same sources
#      with nvcc directly (OUTDIR/build.log);
#   3. runs the self-contained CUDA tests, tests/gpu/cuda_device_selftest.cpp
#      (OUTDIR/selftest.log): copy-engine gather/scatter/memcpy round trips against host
#      references, the contract, error paths, the layout kernel against the CPU reference;
#   4. runs the copy benchmark, gpu/standalone/cuda_copy_bench.cpp (OUTDIR/bench.log): pinned
#      memcpy host<->device, device->device, and the gather/scatter kernel over 16 KiB blocks
#      (measured and printed, never asserted);
#   5. when a kvferry bundle is carried (bench/device-bundle.sh; $KVFERRY_BUNDLE, default
#      bundle/), runs it end to end on device 0: `kvferry demo --pool cuda` and
#      `kvferry bench --pool cuda|engine` (OUTDIR/e2e-*.log), every byte verified;
#   6. writes OUTDIR/summary.txt (PASS/FAIL per step, the bandwidth lines) and prints it.
# Exit status: 0 when the build, every test and the benchmark succeeded; 1 otherwise. A self-test
# that finds no CUDA device (its exit 77, "skipped" elsewhere) is a failure here: this script is
# meant for GPU machines.
#
# Time: about 2 to 4 minutes on a 16-core H200 machine (build 1-2 min, self-test well under a
# minute, benchmark under a minute, end to end 2-4 minutes). Timeouts bound it to about 16
# minutes in the worst case: configure 60 s, build 240 s (300 s for the nvcc-only build),
# self-test 180 s, benchmark 120 s, demo 120 s, each bench 180 s.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: bash bench/device-check.sh OUTDIR" >&2
  exit 2
fi
if [ ! -f gpu/standalone/CMakeLists.txt ]; then
  echo "device-check: run from the repository root (gpu/standalone/CMakeLists.txt not found)" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
repo=$(pwd)
arch=${KVFERRY_CUDA_ARCH:-90}
build=${KVFERRY_GPU_BUILD_DIR:-build-gpu}
jobs=$(nproc 2>/dev/null || echo 4)
summary="$out/summary.txt"
: >"$summary"
failed=0

note() { echo "$*" | tee -a "$summary"; }

# nvcc is not always on PATH where the toolkit is installed.
if ! command -v nvcc >/dev/null 2>&1; then
  for dir in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$dir/nvcc" ]; then
      PATH="$dir:$PATH"
      break
    fi
  done
fi

# --- 1. the machine ------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "uncommitted changes:"
  git status --short 2>/dev/null || echo "(no git)"
  echo "cuda architecture: $arch"
  echo "--- nvcc"; nvcc --version 2>&1 || echo "nvcc not found"
  echo "--- cmake"; cmake --version 2>&1 || echo "cmake not found"
  echo "--- c++"; c++ --version 2>&1 || echo "c++ not found"
} >"$out/env.txt" 2>&1
if command -v nvidia-smi >/dev/null 2>&1; then
  { nvidia-smi; echo; nvidia-smi -q; } >"$out/nvidia-smi.txt" 2>&1 || true
else
  echo "nvidia-smi not found" >"$out/nvidia-smi.txt"
fi
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
note "device-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit, sm_$arch"
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
          head -1 || true)
  note "gpu: $gpu"
fi

# --- 2. build ------------------------------------------------------------------------------
# Sources as in gpu/sources.cmake (one `set(NAME files...)` per line there), for the nvcc-only
# build on machines without cmake: each program from all the sources, 150 s at most each.
sources_of() {
  sed -n "s/^set($1 \(.*\))\$/\1/p" gpu/sources.cmake | tr ' ' '\n' | sed 's|^|gpu/|'
}
build_with_nvcc() {
  mkdir -p "$build"
  local lib=(core/errc.cpp)
  local f
  for f in $(sources_of KVFERRY_GPU_SOURCES) $(sources_of KVFERRY_GPU_CUDA_SOURCES); do
    lib+=("$f")
  done
  local target=-arch=sm_$arch
  [ "$arch" = native ] && target=-arch=native
  # shellcheck disable=SC2054  # the commas belong to -Xcompiler's argument
  local flags=(-std=c++17 -O2 -DNDEBUG -DKVFERRY_WITH_CUDA=1 -I"$repo" -I"$repo/include"
               "$target" -Xcompiler=-Wall,-Wextra)
  timeout 150 nvcc "${flags[@]}" "${lib[@]}" tests/gpu/cuda_device_selftest.cpp \
    -o "$build/cuda_device_selftest" -lpthread &&
    timeout 150 nvcc "${flags[@]}" "${lib[@]}" gpu/standalone/cuda_copy_bench.cpp \
      -o "$build/cuda_copy_bench" -lpthread
}
build_ok=0
start=$SECONDS
if command -v cmake >/dev/null 2>&1; then
  how="cmake"
  if timeout 60 cmake -S gpu/standalone -B "$build" -DCMAKE_BUILD_TYPE=Release \
       -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo nvcc)" \
       >"$out/build.log" 2>&1 &&
     timeout 240 cmake --build "$build" -j"$jobs" >>"$out/build.log" 2>&1; then
    build_ok=1
  fi
else
  how="nvcc alone (no cmake here)"
  if build_with_nvcc >"$out/build.log" 2>&1; then
    build_ok=1
  fi
fi
if [ "$build_ok" = 1 ]; then
  note "build: PASS ($how, $((SECONDS - start)) s)"
else
  note "build: FAIL ($how; see build.log)"
  tail -n 30 "$out/build.log" | tee -a "$summary"
  note "overall: FAIL"
  exit 1
fi

# --- 3. tests ------------------------------------------------------------------------------
start=$SECONDS
rc=0
timeout 180 "$build/cuda_device_selftest" >"$out/selftest.log" 2>&1 || rc=$?
case "$rc" in
  0)
    counts=$(grep -E '^cuda_device_selftest: ' "$out/selftest.log" | tail -1 || true)
    note "selftest: PASS ($counts, $((SECONDS - start)) s)" ;;
  77) note "selftest: FAIL (no CUDA device found: $(tail -1 "$out/selftest.log"))"; failed=1 ;;
  124) note "selftest: FAIL (timed out after 180 s)"; failed=1 ;;
  *) note "selftest: FAIL (exit $rc)"; failed=1 ;;
esac
grep -E '^(ok  |FAIL)' "$out/selftest.log" | sed 's/^/  /' | tee -a "$summary" || true

# One step: NAME LOG LIMIT COMMAND...: runs COMMAND into OUTDIR/LOG for at most LIMIT seconds
# and notes PASS or FAIL.
run_step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local began=$SECONDS code=0
  timeout "$limit" "$@" >"$out/$log" 2>&1 || code=$?
  if [ "$code" = 0 ]; then
    note "$name: PASS ($((SECONDS - began)) s)"
  else
    note "$name: FAIL (exit $code; see $log)"
    failed=1
  fi
}

# --- 4. benchmark --------------------------------------------------------------------------
run_step bench bench.log 120 "$build/cuda_copy_bench"
grep -E 'GB/s|/ memcpy' "$out/bench.log" | sed 's/^/  /' | tee -a "$summary" || true

# --- 5. kvferry end to end (when a bundle was carried: bench/device-bundle.sh) -------------
# Device memory through the real node: a prefill and a decode process on this machine, every
# byte verified, staged out of and copied into cuda regions on device 0 (KVFERRY_DEVICE=auto).
bundle=${KVFERRY_BUNDLE:-bundle}
if [ -x "$bundle/kvferry" ]; then
  # A command, not a function: timeout runs commands.
  run_bundle=(env "LD_LIBRARY_PATH=$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
              "UCX_MODULE_DIR=$bundle/lib/ucx" KVFERRY_DEVICE=auto "$bundle/kvferry")
  run_step "e2e demo --pool cuda" e2e-demo.log 120 "${run_bundle[@]}" demo --pool cuda
  grep -E 'succeeded|GB/s|OK|FAIL' "$out/e2e-demo.log" | sed 's/^/  /' | tee -a "$summary" || true
  for pool in cuda engine; do
    run_step "e2e bench --pool $pool" "e2e-bench-$pool.log" 180 "${run_bundle[@]}" bench \
      --pool "$pool" --device auto --cases bandwidth --sizes 16384 1048576 67108864 \
      --concurrency 1 16 --bytes-per-case 134217728 --verify
    grep -E '^(case|bandwidth)' "$out/e2e-bench-$pool.log" | sed 's/^/  /' | tee -a "$summary" || true
  done
else
  note "e2e: skipped (no $bundle/kvferry: make one with bash bench/device-bundle.sh $bundle)"
fi

if [ "$failed" = 0 ]; then
  note "overall: PASS"
else
  note "overall: FAIL"
fi
exit "$failed"
