#!/usr/bin/env bash
# `tandem train` with parallel.backend=nccl (NCCL for device tensors, MPI for host ones and for
# the pipeline group) on a small fp32 MoE job, 10 steps per run, one stage unless stated:
#  1. one rank: the NCCL communicators are built and the run matches backend mpi (1e-6 relative
#     loss); this one-GPU nccl run is the reference of case 2;
#  2. with two GPUs, dp2, tp2, ep2 (over dp2) and DualPipe pp2 (4 micro-batches = 2 x pp; the
#     pipeline group host-staged over MPI), each of the same global batch as the one-GPU run:
#     a. the nccl run matches the same layout's mpi run (1e-5 relative loss), exercising NCCL
#        all-reduce, the tensor-parallel collectives and the expert all-to-alls;
#     b. the nccl run matches the one-GPU run (1e-5 relative loss per step).
# Skips (exit 77) without a GPU or the corpus; case 2 is skipped with a note on one GPU.
# TANDEM_TRAIN_LAYOUTS_ON_CPU=1 runs case 2b on CPU ranks instead (run.device=cpu, backend mpi,
# no GPU needed): the same layouts and comparison against a one-rank CPU run, which shows the
# comparison itself is sound where no GPU is present.
# Usage: train_nccl_gpu_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
data=$source_dir/data/tiny_corpus
steps=10
on_cpu=${TANDEM_TRAIN_LAYOUTS_ON_CPU:-0}
if [ "$on_cpu" = 1 ]; then
  gpus=2 device=cpu
else
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true) device=cuda
  if [ "${gpus:-0}" -lt 1 ]; then echo "SKIPPED: no GPU (nvidia-smi -L)"; exit 77; fi
fi
if [ ! -f "$data.bin" ]; then echo "SKIPPED: $data.bin is missing (scripts/prepare_data.sh builds it)"; exit 77; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
small=(--set data.path="$data" --set run.device=$device --set train.precision=fp32 --set model.hidden_size=128
       --set model.num_hidden_layers=2 --set data.seq_length=128 --set data.global_batch_size=16
       --set data.micro_batch_size=4 --set train.eval_interval=0 --set train.steps=$steps --set logging.tensorboard=false
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
on_nccl() {  # on_nccl NAME: the run's communicators are NCCL (+ MPI for host tensors)
  grep -q "communication over nccl+mpi" "$work/$1.log" ||
    fail "$1: not on NCCL: $(grep -m1 -o 'communication over [^ ]*' "$work/$1.log")"
}
compare() {  # compare RUN REFERENCE TOLERANCE WHAT: per-step loss of RUN against REFERENCE
  local run=$1 reference=$2 tolerance=$3 what=$4 worst
  worst=$(paste <(field "$work/$run" loss) <(field "$work/$reference" loss) |
          awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
  if [ "$(field "$work/$run" loss | wc -l)" -eq $steps ] && [ "$(field "$work/$reference" loss | wc -l)" -eq $steps ] &&
     awk -v w="$worst" -v t="$tolerance" 'BEGIN { exit !(w <= t) }'; then
    ok "$run vs $reference ($what): worst relative loss difference over $steps steps $worst"
  else fail "$run differs from $reference ($what): worst $worst (tolerance $tolerance)"; fi
}

# name | overrides: every layout keeps the global batch of 16 sequences (4 micro-batches of 4).
layouts=("dp2|parallel.dp=2" "tp2|parallel.tp=2 parallel.dp=1" "ep2|parallel.dp=2 parallel.ep=2"
         "pp2_dualpipe|parallel.pp=2 parallel.dp=1 parallel.pipeline.schedule=dualpipe")

if [ "$on_cpu" = 1 ]; then
  train one.mpi 1 mpi
  for layout in "${layouts[@]}"; do
    IFS='|' read -r name sets <<< "$layout"
    args=(); for s in $sets; do args+=(--set "$s"); done
    train "$name.mpi" 2 mpi "${args[@]}"
    compare "$name.mpi" one.mpi 1e-5 "CPU ranks, the same global batch as one rank"
  done
else
  train one.nccl 1 nccl
  train one.mpi 1 mpi
  on_nccl one.nccl
  compare one.nccl one.mpi 1e-6 "backend nccl vs mpi, one GPU"
  if [ "$gpus" -lt 2 ]; then
    echo "note: dp2/tp2/ep2/pp2_dualpipe need 2 GPUs, this machine shows $gpus: not run"
  else
    for layout in "${layouts[@]}"; do
      IFS='|' read -r name sets <<< "$layout"
      args=(); for s in $sets; do args+=(--set "$s"); done
      train "$name.nccl" 2 nccl "${args[@]}"
      train "$name.mpi" 2 mpi "${args[@]}"
      on_nccl "$name.nccl"
      compare "$name.nccl" "$name.mpi" 1e-5 "backend nccl vs mpi, 2 GPUs"
      compare "$name.nccl" one.nccl 1e-5 "2 GPUs vs the one-GPU run of the same global batch"
    done
  fi
fi

[ $failures -eq 0 ] || { echo "$failures check(s) failed; logs:"; for f in "$work"/*.log; do echo "== $f"; tail -n 5 "$f"; done; exit 1; }
