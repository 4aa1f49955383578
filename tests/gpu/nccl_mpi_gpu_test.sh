#!/usr/bin/env bash
# Runs the NCCL communicator gtest on RANKS ranks, one GPU each, and exits 77 (ctest: skipped)
# with the reason when this machine has fewer GPUs than ranks. With at least one GPU per rank,
# the gtest's own verdict decides; a run where every test skipped is reported as skipped too.
# Usage: nccl_mpi_gpu_test.sh RANKS TEST_BINARY MPIEXEC...
set -uo pipefail
ranks=$1 binary=$2; shift 2
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${gpus:-0}" -lt "$ranks" ]; then
  echo "SKIPPED: $ranks rank(s) need $ranks GPU(s), this machine shows ${gpus:-0} (nvidia-smi -L)"
  exit 77
fi
log=$(mktemp); trap 'rm -f "$log"' EXIT
"$@" "$binary" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -eq 0 ] && ! grep -q '\[  PASSED  \] [1-9]' "$log"; then
  echo "SKIPPED: every test skipped (see the reasons above)"
  exit 77
fi
exit "$status"
