#!/usr/bin/env bash
# One-command set-up for tandem (README): installs what is missing, builds, then
#   ./bootstrap.sh run    trains the default job (configs/tiny_moe.yaml) on several CPU ranks
#   ./bootstrap.sh test   runs the whole test suite (ctest, all labels but bench)
# Idempotent and quick when nothing changed: installs are probed before they are attempted,
# the build is incremental (Ninja + ccache). Works offline when everything is preinstalled
# (the GPU machines: torch 2.11 in the system python, MPI/yaml-cpp/spdlog/protobuf present).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
readonly ROOT=$PWD
readonly TORCH_VERSION=2.11.0
readonly BUILD_DIR=${TANDEM_BUILD_DIR:-build}
mode=${1:-}
case "$mode" in
  run|test) shift ;;
  *) echo "usage: ./bootstrap.sh run|test [extra ctest arguments for test]" >&2; exit 2 ;;
esac
log() { printf '[bootstrap] %s\n' "$*"; }

# --- 1. system packages ----------------------------------------------------------------------
# Probe by the file each package provides, so machines where these came from elsewhere (no apt
# network on the GPU machines) are recognised as complete.
have_file() { for p in "$@"; do [ -e "$p" ] && return 0; done; return 1; }
missing=()   # needed to build and test
optional=()  # used when present: ccache (fast rebuilds), Google Benchmark (bench label), fortunes (corpus), clang-format
command -v mpicxx >/dev/null 2>&1 || missing+=(libopenmpi-dev openmpi-bin)
have_file /usr/include/yaml-cpp/yaml.h /usr/local/include/yaml-cpp/yaml.h || missing+=(libyaml-cpp-dev)
have_file /usr/include/spdlog/spdlog.h /usr/local/include/spdlog/spdlog.h || missing+=(libspdlog-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler libprotobuf-dev)
have_file /usr/include/google/protobuf/message.h /usr/local/include/google/protobuf/message.h || missing+=(libprotobuf-dev)
have_file /usr/include/CLI/CLI.hpp /usr/local/include/CLI/CLI.hpp || missing+=(libcli11-dev)
have_file /usr/include/nlohmann/json.hpp /usr/local/include/nlohmann/json.hpp || missing+=(nlohmann-json3-dev)
have_file /usr/include/gtest/gtest.h /usr/local/include/gtest/gtest.h || missing+=(libgtest-dev libgmock-dev)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
have_file /usr/include/benchmark/benchmark.h /usr/local/include/benchmark/benchmark.h || optional+=(libbenchmark-dev)
command -v ccache >/dev/null 2>&1 || optional+=(ccache)
command -v clang-format >/dev/null 2>&1 || optional+=(clang-format)  # the lint.format test (skipped without it)
have_file /usr/share/games/fortunes/fortunes || optional+=(fortunes)
if [ $((${#missing[@]} + ${#optional[@]})) -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt_install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  log "installing system packages: ${missing[*]} ${optional[*]}"
  if ! { $sudo apt-get update -qq && apt_install "${missing[@]}" "${optional[@]}"; } 2>/dev/null; then
    # No package index (offline machine) or an optional package unavailable: the required ones
    # decide; without the optional ones the build still works (no ccache, no benchmarks, no corpus).
    if [ ${#missing[@]} -gt 0 ] && ! apt_install "${missing[@]}"; then
      log "cannot install ${missing[*]}: install them (Debian/Ubuntu package names) and run again"
      exit 1
    fi
    log "warning: optional packages unavailable (${optional[*]}); continuing without them"
  fi
fi

# --- 2. LibTorch from the torch wheel --------------------------------------------------------
torch_ok() { "$1" -c "import torch,sys; sys.exit(0 if torch.__version__.split('+')[0]=='$TORCH_VERSION' else 1)" 2>/dev/null; }
PYTHON=""
if [ -x .venv/bin/python ] && torch_ok .venv/bin/python; then
  PYTHON=$ROOT/.venv/bin/python
else
  for candidate in python3 /opt/torch/.venv/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && torch_ok "$candidate"; then PYTHON=$(command -v "$candidate"); break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  log "installing torch==$TORCH_VERSION into .venv (LibTorch comes from this wheel)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
  PYTHON=$ROOT/.venv/bin/python
fi

# --- 3. build ------------------------------------------------------------------------------
jobs=$(nproc)
if [ ! -f "$BUILD_DIR/build.ninja" ] || ! grep -q "TANDEM_PYTHON:FILEPATH=$PYTHON\$" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
  log "configuring $BUILD_DIR (python: $PYTHON)"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DTANDEM_PYTHON="$PYTHON" ${TANDEM_CMAKE_ARGS:-} >/dev/null
fi
log "building ($jobs jobs)"
cmake --build "$BUILD_DIR" -j "$jobs" || { log "build failed (see the compiler output above)"; exit 1; }

# --- 4. data: the default job's corpus (Debian's `fortunes` as a Megatron indexed dataset) ----
if ! scripts/prepare_data.sh; then
  [ "$mode" = run ] && { log "could not prepare data/tiny_corpus (see above)"; exit 1; }
  log "warning: data/tiny_corpus could not be prepared; tests that train on it will be skipped"
fi

# --- 5. run ---------------------------------------------------------------------------------
# Open MPI refuses to run as root and to start more ranks than cores unless told; both are
# normal on a developer box or in a container.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export NCCL_NVLS_ENABLE=0
case "$mode" in
  run)
    # --overwrite: each `./bootstrap.sh run` starts the default job afresh in runs/tiny_moe
    # (tandem train refuses to replace another run's outputs unless told to).
    log "default job (DualPipe over 4 pipeline ranks): mpirun -np 4 $BUILD_DIR/bin/tandem train configs/tiny_moe.yaml --overwrite"
    mpirun -np 4 --bind-to none "$BUILD_DIR/bin/tandem" train configs/tiny_moe.yaml --overwrite "$@"
    ;;
  test)
    ctest --test-dir "$BUILD_DIR" -LE bench --output-on-failure -j "$jobs" "$@"
    ;;
esac
