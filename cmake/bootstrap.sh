#!/usr/bin/env bash
# Mantissa's set-up in one place, used by README's two commands and by CI:
#   bash cmake/bootstrap.sh run    install what is missing, build, run the main job on inputs/quickstart.toml
#   bash cmake/bootstrap.sh test   install what is missing, build, run the whole test suite (ctest)
#   bash cmake/bootstrap.sh perf   also install python3-torch, build, run perf/compare_pytorch.py
#                                  (Mantissa vs the same model in PyTorch; extra arguments go to it)
# Installing needs root (apt-get); it is skipped, quietly, when every package is already there.
# MANTISSA_PRESET selects the CMake preset (default: release; debug = ASan + UBSan).
set -euo pipefail

mode="${1:-}"
case "$mode" in run|test|perf) ;; *) echo "usage: bash cmake/bootstrap.sh run|test|perf [compare_pytorch.py arguments]" >&2; exit 2 ;; esac
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
preset="${MANTISSA_PRESET:-release}"

# Debian 12 packages: compiler and build, Kokkos + Kokkos Kernels (Trilinos), MPI, parallel HDF5,
# deck/CLI/format libraries, test and benchmark frameworks, and the Python side of the plots.
packages=(g++ cmake make pkg-config git
  libtrilinos-kokkos-dev libtrilinos-kokkos-kernels-dev libopenblas0-serial libdnnl-dev ocl-icd-opencl-dev
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev zlib1g-dev
  libtomlplusplus-dev libcli11-dev libfmt-dev
  libgtest-dev libbenchmark-dev
  python3-h5py python3-numpy python3-matplotlib)
[ "$mode" = perf ] && packages+=(python3-torch)  # only the PyTorch comparison needs it (large)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# OpenMPI refuses to start as root without these (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

cd "$root"
jobs="$(nproc)"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$jobs"

ranks=$((jobs < 2 ? 1 : 2))
case "$mode" in
  run)
    # mantissa-mpiexec: mpiexec whose SIGTERM/Ctrl-C becomes a clean stop with a checkpoint (status 3)
    exec "build/$preset/src/mantissa-mpiexec" -n "$ranks" "build/$preset/src/mantissa" run -i inputs/quickstart.toml
    ;;
  perf)
    exec /usr/bin/python3 perf/compare_pytorch.py --build-dir "build/$preset" "$@"
    ;;
  test)
    if [ "$preset" = debug ]; then
      export ASAN_OPTIONS=detect_leaks=0 MANTISSA_PRECISION_SAMPLES=2000000
    fi
    exec ctest --preset "$preset" -j "$jobs"
    ;;
esac
