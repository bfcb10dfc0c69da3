#!/usr/bin/env bash
# The GPU benchmark, one command on a bare NVIDIA node (no network, no distribution packages): Mantissa's
# two engines (perf/gpu_bench.cpp) and the same models in PyTorch (perf/gpu_torch.py, the node's own
# PyTorch 2.x), run alternately size by size in one job, then one table of tokens/s, MFU and ratios.
#
#   bash perf/gpu_bench.sh                       # from the repository root
# What it needs: what tests/cuda/gpu_check.sh needs (nvcc, CMake, g++, build/ext/kokkos-cuda and
# build/ext/googletest carried with the working tree), python3 with torch and CUDA. It builds with
# BUILD_ONLY=1 bash tests/cuda/gpu_check.sh unless build/gpu-check/gpu_bench exists (~4-6 min on 16 cores;
# run the GPU check first and the build is shared).
# Environment: SIZES (default 512,1024,2048), SECONDS_PER (per measurement, default 2), NEW_TOKENS
# (default 1024), BATCHES (default 64,256,512), TRAIN_LEN (default 1024), OUT (default build/gpu-bench):
# results.jsonl (every measurement), table.md, logs.
# Measurements with the defaults: 3 sizes x (3 precisions training in both, torch.compile bf16,
# the consistent-mode forward, bf16 rollouts at 3 batch sizes + consistent mode at the largest) =
# ~60 measurements of ~2-3 s each plus model set-up and compile time: about 5-7 minutes on an H200.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/build/gpu-bench}
sizes=${SIZES:-512,1024,2048}
sec=${SECONDS_PER:-2}
new=${NEW_TOKENS:-1024}
batches=${BATCHES:-64,256,512}
tlen=${TRAIN_LEN:-1024}
mkdir -p "$out"
log() { echo "[gpu_bench] $*"; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; assert torch.cuda.is_available(); print('PyTorch', torch.__version__, torch.cuda.get_device_name())" \
  || { log "python3 with CUDA PyTorch is needed"; exit 2; }
bench=$root/build/gpu-check/gpu_bench
if [ ! -x "$bench" ]; then
  log "building (tests/cuda/gpu_check.sh, BUILD_ONLY=1)"
  BUILD_ONLY=1 OUT="$out/build" bash tests/cuda/gpu_check.sh || { log "build failed (logs in $out/build)"; exit 1; }
fi
t0=$(date +%s)
: > "$out/results.jsonl"
common=(--train-len "$tlen" --new-tokens "$new" --batches "$batches" --seconds "$sec")
for size in ${sizes//,/ }; do
  log "size $size: Mantissa"
  "$bench" --sizes "$size" "${common[@]}" >> "$out/results.jsonl" 2>> "$out/mantissa.log"
  log "size $size: PyTorch"
  python3 perf/gpu_torch.py --sizes "$size" "${common[@]}" >> "$out/results.jsonl" 2>> "$out/torch.log"
  log "$(( $(date +%s) - t0 )) s so far"
done
python3 perf/gpu_torch.py --summarize "$out/results.jsonl" | tee "$out/table.md"
log "done in $(( $(date +%s) - t0 )) s; every measurement in $out/results.jsonl"
