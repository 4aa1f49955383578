#!/usr/bin/env bash
# Pipeline and expert parallelism at scale (docs/benchmarks.md, "Pipeline and expert
# parallelism at scale"): every run of the issue with `mpirun -np P tandem train` on the MoE job
# configs/bench/moe_scale.yaml, on CPU ranks (MPI) or one GPU per rank (NCCL), for each P of --ranks:
#   a. pp=P with each schedule (1f1b, interleaved with 2 virtual stages, zb1p, dualpipe,
#      dualpipev): tokens/s, and for the traced step the measured bubble per rank next to the
#      simulator's prediction from the measured op times (`tandem simulate --measured`), with the
#      side-by-side picture copied to --out/svg/.
#   b. ep=P over dp=P (pp 1): the all-to-all bandwidth achieved inside training (bytes the
#      dispatch/combine exchanges sent over their time, from the traced step's exchange timeline)
#      next to the backend's own all-to-all at the same message size (tandem_alltoall_bench);
#      and the fraction of all-to-all time hidden under the paired micro-batch's compute, from
#      the part c runs (DualPipe with ep2; the 1F1B run is the no-overlap contrast).
#   c. pp=P/2 x dp2 with ep2 (zero 1) under dualpipe and 1f1b: tokens/s, scaling efficiency
#      against one rank = tokens/s / (P x one rank's tokens/s); every data-parallel replica and
#      the one-rank run process the same 16 micro-batches of the same size per step.
# Prints one Markdown table per part (tests/bench/scale_report.py) to --out/table.md and writes
# the raw JSON lines to --out/results.jsonl; logs per run in --out/NAME.log.
#
#   tests/bench/run_pipeline_scale_bench.sh --ranks "4 8" --threads-per-rank 2   # 16 CPU cores
#   tests/bench/run_pipeline_scale_bench.sh --device cuda --ranks "4 8"          # 4/8 GPUs
#
# Options: --out DIR (build/bench-results-scale), --device cpu|cuda (cpu), --ranks "4 8", --steps N
# (6: steps per run; tokens/s is the median of the steps after --skip N, 2), --trace-step N
# (steps - 1), --threads-per-rank N (OMP_NUM_THREADS of every rank; 1), --schedules LIST (part a),
# --parts "a b c", --tandem PATH, --bench PATH (tandem_alltoall_bench), --mpirun CMD, --python PY,
# --set key=value (every run), --dry-run (print the commands only).
# Build first: ./bootstrap.sh test (or cmake --build build --target tandem tandem_alltoall_bench).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

tandem=$root/build/bin/tandem
bench=$root/build/bin/tandem_alltoall_bench
mpirun=${MPIRUN:-mpirun}
python=
out=$root/build/bench-results-scale
device=cpu ranks="4 8" steps=6 skip=2 trace_step= threads=1 parts="a b c" dry=0
schedules="1f1b interleaved zb1p dualpipe dualpipev"
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift ;;
    --device) device=$2; shift ;;
    --ranks) ranks=$2; shift ;;
    --steps) steps=$2; shift ;;
    --skip) skip=$2; shift ;;
    --trace-step) trace_step=$2; shift ;;
    --threads-per-rank) threads=$2; shift ;;
    --schedules) schedules=$2; shift ;;
    --parts) parts=$2; shift ;;
    --tandem) tandem=$2; shift ;;
    --bench) bench=$2; shift ;;
    --mpirun) mpirun=$2; shift ;;
    --python) python=$2; shift ;;
    --set) sets+=(--set "$2"); shift ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run_pipeline_scale_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$trace_step" ] || trace_step=$((steps - 1))
[ "$trace_step" -ge 1 ] && [ "$trace_step" -le "$steps" ] || { echo "run_pipeline_scale_bench.sh: --trace-step must lie in 1..--steps" >&2; exit 2; }
# shellcheck source=tests/bench/bench_python.sh
. "$here/bench_python.sh"
[ -n "$python" ] || python=$(bench_python "$root")
config=$root/configs/bench/moe_scale.yaml
report=$here/scale_report.py
if [ "$dry" = 0 ]; then
  for exe in "$tandem" "$bench"; do
    [ -x "$exe" ] || { echo "run_pipeline_scale_bench.sh: $exe not built (./bootstrap.sh test builds it)" >&2; exit 2; }
  done
fi

# Launcher (bench_python.sh): ranks not pinned, each with OMP_NUM_THREADS threads.
bench_launcher "$mpirun"
launcher+=(-x "OMP_NUM_THREADS=$threads")
case $device in
  cpu) device_sets=(--set run.device=cpu --set parallel.backend=mpi --set train.precision=fp32) ;;
  cuda)
    launcher+=(-x NCCL_NVLS_ENABLE=0)
    device_sets=(--set run.device=cuda --set parallel.backend=nccl --set train.precision=bf16
                 --set model.hidden_size=1024 --set model.moe_intermediate_size=512 --set model.num_attention_heads=8
                 --set model.num_key_value_heads=8 --set data.seq_length=1024 --set model.max_position_embeddings=1024
                 --set data.micro_batch_size=2) ;;
  *) echo "run_pipeline_scale_bench.sh: --device is cpu or cuda" >&2; exit 2 ;;
esac
mkdir -p "$out/svg"
results=$out/results.jsonl
[ "$dry" = 1 ] || : > "$results"

corpus=$out/corpus
[ "$dry" = 1 ] || bench_corpus "$root" "$tandem" "$corpus"

# train NAME RANKS OVERRIDES...: one `tandem train` run into $out/NAME; returns its exit status.
train() {
  local name=$1 np=$2; shift 2
  local args=("$tandem" train "$config" --set "data.path=$corpus" --set "run.output_dir=$out/$name"
              --set "train.steps=$steps" --set "logging.trace_steps=[$trace_step]" "${device_sets[@]}" "${sets[@]}")
  local o
  last_sets=()  # the run's layout, for `tandem simulate` (pipeline_result)
  for o in "$@"; do last_sets+=(--set "$o"); done
  args+=("${last_sets[@]}")
  args=("${launcher[@]}" -np "$np" "${args[@]}")
  echo "== $name ($np ranks)" >&2
  if [ "$dry" = 1 ]; then echo "+ ${args[*]}"; return 0; fi
  rm -rf "${out:?}/$name"
  local start=$SECONDS status=0
  "${args[@]}" > "$out/$name.log" 2>&1 || status=$?
  echo "   $((SECONDS - start)) s, exit $status" >&2
  return "$status"
}

# result PART NAME RANKS SCHEDULE LAYOUT STATUS [extra scale_report.py result options]
result() {
  local part=$1 name=$2 np=$3 schedule=$4 layout=$5 status=$6; shift 6
  [ "$dry" = 1 ] && return 0
  if [ "$status" -ne 0 ]; then
    local why
    why=$(grep -m1 -iE 'error|refus' "$out/$name.log" | cut -c1-160 || true)
    "$python" "$report" result --part "$part" --label "$name" --ranks "$np" --schedule "$schedule" --layout "$layout" \
      --error "exit $status: ${why:-see $name.log}" >> "$results"
    return 0
  fi
  "$python" "$report" result --part "$part" --label "$name" --ranks "$np" --schedule "$schedule" --layout "$layout" \
    --metrics "$out/$name/metrics.jsonl" --skip "$skip" "$@" >> "$results"
}

# Part a: the measured pipeline of the traced step next to its re-simulation (and the picture).
pipeline_result() {
  local part=$1 name=$2 np=$3 schedule=$4 layout=$5 status=$6; shift 6
  local traces=$out/$name/traces/step$trace_step extra=()
  if [ "$dry" = 0 ] && [ "$status" -eq 0 ] && [ -f "$traces/rank0.json" ]; then
    "$tandem" simulate "$config" --world "$np" "${device_sets[@]}" "${sets[@]}" "${last_sets[@]}" --measured "$traces" \
      --out "$out/svg/$name" > "$out/$name.compare.txt" 2>&1 || true
    extra=(--compare "$out/$name.compare.txt" --svg "$out/svg/$name.svg")
  fi
  result "$part" "$name" "$np" "$schedule" "$layout" "$status" "${extra[@]}" "$@"
}

exchanges_of() { echo "$out/$1/traces/step$trace_step/exchanges"; }

for np in $ranks; do
  if [[ " $parts " == *" a "* ]]; then
    for schedule in $schedules; do
      name=pp${np}_$schedule
      virtual=1
      [ "$schedule" = interleaved ] && virtual=2
      status=0
      train "$name" "$np" parallel.pp="$np" parallel.dp=1 parallel.pipeline.schedule="$schedule" \
        parallel.pipeline.virtual_stages=$virtual data.global_batch_size=16 || status=$?
      pipeline_result a "$name" "$np" "$schedule" "pp$np" "$status"
    done
  fi
  if [[ " $parts " == *" b "* ]]; then
    name=ep${np}
    status=0
    train "$name" "$np" parallel.pp=1 parallel.dp="$np" parallel.ep="$np" data.global_batch_size=$((16 * np)) || status=$?
    extra=()
    if [ "$dry" = 0 ] && [ "$status" -eq 0 ] && [ -d "$(exchanges_of "$name")" ]; then
      # The backend's own all-to-all at the mean message size of the run's exchanges.
      size=$("$python" "$report" exchanges "$(exchanges_of "$name")" | "$python" -c 'import json,sys; print(int(json.load(sys.stdin)["bytes_per_exchange"]))')
      echo "== $name: backend all-to-all at $size bytes per rank" >&2
      "${launcher[@]}" -np "$np" "$bench" --device "$device" --bytes "$size" > "$out/$name.alltoall.json" 2> "$out/$name.alltoall.log" || true
      extra=(--alltoall-bench "$out/$name.alltoall.json")
    elif [ "$dry" = 1 ]; then
      echo "+ ${launcher[*]} -np $np $bench --device $device --bytes <mean bytes per exchange of $name>"
    fi
    result b "$name" "$np" - "ep$np over dp$np" "$status" --exchanges "$(exchanges_of "$name")" "${extra[@]}"
  fi
  if [[ " $parts " == *" c "* ]] && [ "$np" -ge 4 ]; then
    half=$((np / 2))
    for schedule in dualpipe 1f1b; do
      name=pp${half}_dp2_ep2_$schedule
      status=0
      train "$name" "$np" parallel.pp="$half" parallel.dp=2 parallel.ep=2 parallel.zero=1 \
        parallel.pipeline.schedule="$schedule" data.global_batch_size=32 || status=$?
      pipeline_result c "$name" "$np" "$schedule" "pp$half x dp2 x ep2" "$status"
      # The same run's exchanges: the hidden fraction under DualPipe (1F1B: the no-overlap contrast).
      result b "$name" "$np" "$schedule" "pp$half x dp2 x ep2" "$status" --exchanges "$(exchanges_of "$name")"
    done
  fi
done
if [[ " $parts " == *" c "* ]]; then
  status=0
  train 1rank 1 parallel.pp=1 parallel.dp=1 data.global_batch_size=16 || status=$?
  result c 1rank 1 - "1 rank" "$status"
fi
[ "$dry" = 1 ] && exit 0
"$python" "$report" table "$results" | tee "$out/table.md"
echo "(logs, pictures and results in $out)" >&2
