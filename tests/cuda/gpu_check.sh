#!/usr/bin/env bash
# GPU check of Mantissa on a bare NVIDIA node (one command, no network, no distribution packages):
# builds the kernel library and the kernel tests (MANTISSA_KERNELS_ONLY: Kokkos, Kokkos Kernels and
# GoogleTest only; MPI, HDF5, toml++, CLI11, fmt are not needed) against a CUDA Kokkos install, runs
# every test on the GPU (Kokkos' default execution space Cuda), then the two stand-alone CUDA checks
# (precision_check.cu, exp_check.cu), and prints one table.
#
# What it needs on the node: CMake >= 3.16, nvcc (CUDA 12/13) on PATH, g++, an NVIDIA GPU.
# What travels with the working tree (both ignored paths under build/, ~18 MiB together):
#   build/ext/kokkos-cuda   a Kokkos + Kokkos Kernels (BLAS) CUDA install (KOKKOS_CUDA_ROOT overrides),
#                           e.g. cp -a /path/to/kokkos-cuda-install build/ext/kokkos-cuda
#   build/ext/googletest    a GoogleTest source tree (GTEST_SRC overrides), e.g. cp -a /usr/src/googletest build/ext/
# The install's CMake files name the CUDA toolkit of the machine that built it; if that path does not
# exist here, a copy of the install is retargeted to this node's toolkit (the directory above nvcc).
#
#   bash tests/cuda/gpu_check.sh                 # from the repository root; ~4-6 min on 16 cores
# Environment: JOBS (default nproc), ARCH (CMake CUDA arch for the wrapper, default sm_90),
# OUT (if set, the table and logs are also written there), BUILD_ONLY=1 (stop after the build: what
# perf/gpu_bench.sh uses). Exit status 0 when every test passed. The build holds the kernel library,
# the engines (mantissa_engines) and their tests that need no MPI/HDF5 (test_determinism,
# test_rollout_sync), and perf's gpu_bench.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
kokkos=${KOKKOS_CUDA_ROOT:-$root/build/ext/kokkos-cuda}
gtest=${GTEST_SRC:-$root/build/ext/googletest}
jobs=${JOBS:-$(nproc)}
arch=${ARCH:-sm_90}
bld=$root/build/gpu-check
out=${OUT:-$bld/out}
mkdir -p "$bld" "$out"
log() { echo "[gpu_check] $*"; }

command -v nvcc >/dev/null || { log "nvcc not on PATH"; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ -d "$kokkos/lib/cmake/Kokkos" ] || [ -d "$kokkos/lib64/cmake/Kokkos" ] || { log "no Kokkos install at $kokkos"; exit 2; }
[ -f "$gtest/CMakeLists.txt" ] || { log "no GoogleTest sources at $gtest"; exit 2; }

# Retarget the install's CUDA toolkit paths (cuBLAS in Kokkos Kernels' targets) to this node's.
cuda_home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
kk_targets=$(ls "$kokkos"/lib*/cmake/KokkosKernels/KokkosKernelsTargets.cmake 2>/dev/null | head -1)
if [ -n "$kk_targets" ]; then
  old_cuda=$(grep -o '"[^";]*/libcublas[^";]*' "$kk_targets" | head -1 | tr -d '"')
  if [ -n "$old_cuda" ] && [ ! -e "$old_cuda" ]; then
    log "retargeting $kokkos (cuBLAS was $old_cuda) to $cuda_home"
    rm -rf "$bld/kokkos-cuda" && cp -a "$kokkos" "$bld/kokkos-cuda" && kokkos=$bld/kokkos-cuda
    old_home=$(dirname "$(dirname "$old_cuda")")
    cublas=$(ls "$cuda_home"/lib64/libcublas.so "$cuda_home"/lib/libcublas.so "$cuda_home"/targets/*/lib/libcublas.so 2>/dev/null | head -1)
    sed -i "s#$old_cuda#$cublas#g; s#$old_home/include#$cuda_home/include#g" "$kokkos"/lib*/cmake/KokkosKernels/*.cmake
  fi
fi
wrapper=$kokkos/bin/nvcc_wrapper
sed -i "s/^default_arch=.*/default_arch=\"$arch\"/" "$wrapper" 2>/dev/null || true

t0=$(date +%s)
log "configure (kernels only) against $kokkos"
cmake -S "$root" -B "$bld" -DCMAKE_BUILD_TYPE=Release -DMANTISSA_KERNELS_ONLY=ON -DMANTISSA_ENABLE_PERF=OFF \
  -DKokkos_ROOT="$kokkos" -DKokkosKernels_ROOT="$kokkos" -DCMAKE_CXX_COMPILER="$wrapper" \
  -DMANTISSA_GTEST_SOURCE_DIR="$gtest" > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
log "build -j$jobs"
cmake --build "$bld" -j"$jobs" > "$out/build.log" 2>&1 || { grep -m20 -B2 -A3 "error" "$out/build.log"; exit 1; }
warnings=$(grep -c "warning" "$out/build.log")
t1=$(date +%s)
log "built in $((t1 - t0)) s, $warnings warning lines"
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0  # perf/gpu_bench.sh: the build (kernels, engines, gpu_bench) only

# The stand-alone CUDA checks (2^32 patterns each).
cuda_checks=""
if nvcc -O2 -std=c++17 -arch="$arch" -I physics-free-kernels tests/cuda/precision_check.cu -o "$bld/precision_check" \
     > "$out/precision_check_build.log" 2>&1; then cuda_checks="precision_check"; fi
if nvcc -O2 -std=c++17 -arch="$arch" -fmad=false -I physics-free-kernels tests/cuda/exp_check.cu -o "$bld/exp_check_nofma" \
     > "$out/exp_check_build.log" 2>&1; then cuda_checks="$cuda_checks exp_check_nofma"; fi

status=0
table="$out/table.md"
{
  echo "| test | result | passed | skipped | failed | seconds | execution space |"
  echo "|---|---|---|---|---|---|---|"
} > "$table"
for exe in "$bld"/tests/test_*; do
  [ -x "$exe" ] || continue
  name=$(basename "$exe")
  s=$(date +%s.%N)
  timeout 300 "$exe" > "$out/$name.log" 2>&1
  rc=$?
  e=$(date +%s.%N)
  space=$(grep -m1 -o "execution space [A-Za-z]*" "$out/$name.log" | awk '{print $3}')
  passed=$(grep -m1 -o "PASSED  \] [0-9]*" "$out/$name.log" | awk '{print $3}')
  skipped=$(grep -m1 -o "SKIPPED \] [0-9]*" "$out/$name.log" | awk '{print $3}')
  failed=$(grep -m1 -o "FAILED  \] [0-9]* test" "$out/$name.log" | awk '{print $3}')
  result=pass; [ $rc -eq 0 ] || { result="FAIL (rc $rc)"; status=1; }
  printf "| %s | %s | %s | %s | %s | %.1f | %s |\n" "$name" "$result" "${passed:-0}" "${skipped:-0}" "${failed:-0}" \
    "$(echo "$e - $s" | bc 2>/dev/null || echo 0)" "${space:-?}" >> "$table"
done
for c in $cuda_checks; do
  s=$(date +%s)
  timeout 300 "$bld/$c" > "$out/$c.log" 2>&1
  rc=$?
  result=pass; [ $rc -eq 0 ] || { result="FAIL (rc $rc)"; status=1; }
  printf "| %s | %s | - | - | - | %d | CUDA (nvcc) |\n" "$c" "$result" "$(( $(date +%s) - s ))" >> "$table"
done
grep -h "SKIPPED\|GTEST_SKIP\|Skipped" "$out"/test_*.log | grep -v "^\[  SKIPPED \] [0-9]" | sort -u > "$out/skips.txt"
echo
echo "Mantissa GPU check: Kokkos at $kokkos, $warnings warning lines in the build, $(( $(date +%s) - t0 )) s in all"
cat "$table"
[ -s "$out/skips.txt" ] && { echo; echo "Skipped (host-only checks):"; cat "$out/skips.txt"; }
exit $status
