#!/usr/bin/env bash
# `tandem train` with parallel.backend=nccl (NCCL for device tensors, MPI for host ones) against
# the same runs with parallel.backend=mpi (device tensors staged through the host), fp32 on the
# GPU, 8 steps each, on one stage (the default job's DualPipe pp4 -> pp1):
#  1. one rank: the NCCL communicators are built and the run matches (1e-6 relative loss);
#  2. with two GPUs: dp2, tp2 and ep2 (over dp2) match their mpi runs (1e-5 relative loss),
#     exercising NCCL all-reduce, the tensor-parallel collectives and the expert all-to-alls.
# Skips (exit 77) without a GPU or the corpus; case 2 is skipped with a note on one GPU.
# Usage: train_nccl_gpu_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
data=$source_dir/data/tiny_corpus
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${gpus:-0}" -lt 1 ]; then echo "SKIPPED: no GPU (nvidia-smi -L)"; exit 77; fi
if [ ! -f "$data.bin" ]; then echo "SKIPPED: $data.bin is missing (scripts/prepare_data.sh builds it)"; exit 77; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
small=(--set data.path="$data" --set run.device=cuda --set train.precision=fp32 --set model.hidden_size=128
       --set model.num_hidden_layers=2 --set data.seq_length=128 --set data.global_batch_size=16
       --set data.micro_batch_size=4 --set train.eval_interval=0 --set train.steps=8 --set logging.tensorboard=false
       --set checkpoint.save_on_exit=false --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b)
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
train() {  # train NAME RANKS BACKEND ARGS...
  local name=$1 ranks=$2 backend=$3; shift 3
  NCCL_NVLS_ENABLE=0 timeout 300 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" \
    "${small[@]}" --set parallel.backend="$backend" --set run.output_dir="$work/$name" "$@" >"$work/$name.log" 2>&1 ||
    fail "$name exited $? ($(tail -3 "$work/$name.log"))"
}
field() { sed -nE "s/.*\"$2\":([-0-9.e+]+).*/\1/p" "$1/metrics.jsonl" 2>/dev/null; }
compare() {  # compare NAME TOLERANCE: the nccl run of NAME against its mpi run
  local name=$1 tolerance=$2 worst
  grep -q "communication over nccl+mpi" "$work/$name.nccl.log" ||
    fail "$name: not on NCCL: $(grep -m1 -o 'communication over [^ ]*' "$work/$name.nccl.log")"
  worst=$(paste <(field "$work/$name.nccl" loss) <(field "$work/$name.mpi" loss) |
          awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
  if [ "$(field "$work/$name.nccl" loss | wc -l)" -eq 8 ] && awk -v w="$worst" -v t="$tolerance" 'BEGIN { exit !(w <= t) }'; then
    ok "$name: backend nccl vs mpi, worst relative loss difference over 8 steps $worst"
  else fail "$name: backend nccl differs from mpi: worst $worst (tolerance $tolerance)"; fi
}

train one.nccl 1 nccl
train one.mpi 1 mpi
compare one 1e-6

if [ "$gpus" -lt 2 ]; then
  echo "note: dp2/tp2/ep2 need 2 GPUs, this machine shows $gpus: not run"
else
  for layout in "dp2|parallel.dp=2" "tp2|parallel.tp=2 parallel.dp=1" "ep2|parallel.dp=2 parallel.ep=2"; do
    IFS='|' read -r name sets <<< "$layout"
    args=(); for s in $sets; do args+=(--set "$s"); done
    train "$name.nccl" 2 nccl "${args[@]}"
    train "$name.mpi" 2 mpi "${args[@]}"
    compare "$name" 1e-5
  done
fi

[ $failures -eq 0 ] || { echo "$failures check(s) failed; logs:"; for f in "$work"/*.log; do echo "== $f"; tail -n 5 "$f"; done; exit 1; }
