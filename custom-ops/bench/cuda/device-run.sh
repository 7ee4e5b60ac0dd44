#!/bin/bash
# One prepared run on a lent GPU machine (nvcc and cuBLAS there, no .NET): builds libquantc_ops with its CUDA kernels and
# the harness from source, runs the harness once small under compute-sanitizer (memcheck) and once at full size.
# Usage (from the repository root): custom-ops/bench/cuda/device-run.sh ORT_INCLUDE_DIR [OUT]
# Writes build.log, sanitizer.log, quick.md, full.md, full.log, env.txt under OUT ($OUT on the device machine).
# QC_SKIP_SANITIZER=1 skips the memcheck run; QC_ONLY=gemm|mamba|hadamard restricts the suites; the time limits of the
# steps (seconds): QC_BUILD_TIMEOUT (300), QC_SANITIZER_TIMEOUT (180), QC_FULL_TIMEOUT (420).
set -u -o pipefail
ort_include=${1:?ONNX Runtime include folder}
out=${2:-${OUT:-/tmp/qc-out}}
mkdir -p "$out"
build=/tmp/qc-build
step() { echo "== $* ($(date -u +%T))"; }

step environment
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv
  nvcc --version | tail -n 2
  grep -m1 'model name' /proc/cpuinfo; nproc
  cmake --version | head -n 1; g++ --version | head -n 1
} 2>&1 | tee "$out/env.txt"

step configure and build
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
if ! timeout ${QC_BUILD_TIMEOUT:-300} bash -c "cmake -S custom-ops -B $build ${gen[*]} -DORT_INCLUDE_DIR=$ort_include -DQUANTC_BUILD_TESTS=OFF \
      -DQUANTC_CUDA=ON -DQUANTC_WERROR=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS=-Xptxas=-v \
      && cmake --build $build --target quantc_ops quantc_cuda_bench -j $(nproc)" > "$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log"; echo "BUILD FAILED"; exit 2
fi
grep -E "error|warning" "$out/build.log" | grep -v "0 errors" | head -n 20
grep -E "spill|Used [0-9]+ registers" "$out/build.log" | sed 's/ptxas info *: //' | sort | uniq -c | sort -rn | head -n 12
ldd $build/libquantc_ops.so | grep -v -E "linux-vdso|ld-linux" | awk '{print "libquantc_ops needs: " $1}'

if [ "${QC_SKIP_SANITIZER:-0}" != 1 ] && command -v compute-sanitizer >/dev/null; then
  step "quick run under compute-sanitizer memcheck"
  QC_QUICK=1 timeout ${QC_SANITIZER_TIMEOUT:-180} compute-sanitizer --tool memcheck --leak-check no --print-limit 20 $build/quantc_cuda_bench "$out/quick.md" \
    > "$out/sanitizer.log" 2>&1
  echo "exit $?"; grep -E "ERROR SUMMARY|checks passed|CHECKS FAILED|Invalid|FAIL" "$out/sanitizer.log" | head -n 20
fi

step full run
timeout ${QC_FULL_TIMEOUT:-420} $build/quantc_cuda_bench "$out/full.md" 2>&1 | tee "$out/full.log" | grep -v "^|" ; echo "exit ${PIPESTATUS[0]}"
step done
cat "$out/full.md" 2>/dev/null
