#!/usr/bin/env bash
# Scaling of the MoE benchmark job (configs/bench/moe_1b.yaml) from 1 to 2 GPUs with
# `tandem train`: the 1-GPU run, then dp2, tp2, ep2 (over dp2) and DualPipe pp2, each with
# `mpirun -np 2`, one rank per GPU. Per run: tokens/s as the median of metrics.jsonl's
# tokens_per_s over the steps after --skip warm-up steps; scaling efficiency =
# tokens/s / (2 x the 1-GPU tokens/s) (bench_table.py --scaling); and, where the run wrote a
# Chrome trace for step --trace-step (logging.trace_steps) with its exchanges in it, the fraction
# of all-to-all time hidden under compute (trace_overlap.py). Every GPU keeps micro_batch_size x
# seq_length tokens per micro-batch; global batches follow the layout (see `layouts` below).
# A layout the trainer refuses (exit 2, e.g. a build whose `tandem train` runs dp only) becomes a
# row marked unsupported instead of stopping the script. Prints ONE table.
#
#   tests/bench/run_gpu_bench_2gpu.sh            # on a 2-GPU machine, after ./bootstrap.sh test (which builds)
#   tests/bench/run_gpu_bench_2gpu.sh --dry-run  # print the commands only
#
# Options: --tandem PATH (build/bin/tandem), --mpirun CMD (mpirun), --python PY, --steps N (12),
# --skip N (4), --trace-step N (8), --backend nccl|mpi (parallel.backend; nccl), --out DIR
# (build/bench-results-2gpu), --set key=value (for every run), --dry-run. With nccl the pipeline
# group still uses host-staged MPI (the executor needs tag matching), so pp2 moves activations
# through the host.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

tandem=$root/build/bin/tandem
mpirun=${MPIRUN:-mpirun}
[ "$(id -u)" = 0 ] && mpirun="$mpirun --allow-run-as-root"
python=
steps=12 skip=4 trace_step=8 dry=0 backend=nccl
out=$root/build/bench-results-2gpu
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --tandem) tandem=$2; shift ;;
    --mpirun) mpirun=$2; shift ;;
    --python) python=$2; shift ;;
    --steps) steps=$2; shift ;;
    --skip) skip=$2; shift ;;
    --trace-step) trace_step=$2; shift ;;
    --backend) backend=$2; shift ;;
    --out) out=$2; shift ;;
    --set) sets+=(--set "$2"); shift ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run_gpu_bench_2gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=tests/bench/bench_python.sh
. "$here/bench_python.sh"
[ -n "$python" ] || python=$(bench_python "$root")
config=$root/configs/bench/moe_1b.yaml
mkdir -p "$out"
run() { if [ "$dry" = 1 ]; then echo "+ $*"; else "$@"; fi; }

# A corpus for `tandem train`: the repository's own sources and docs (bench_python.sh).
corpus=$out/corpus
if [ "$dry" = 1 ]; then
  echo "+ $tandem preprocess --input <the repository's sources and docs> --output $corpus --split-on file"
else
  bench_corpus "$root" "$tandem" "$corpus"
fi

# name | ranks | overrides (micro_batch_size 4, 4 micro-batches per data-parallel rank and step)
layouts=(
  "1gpu|1|parallel.dp=1 data.global_batch_size=16"
  "dp2|2|parallel.dp=2 data.global_batch_size=32"
  "tp2|2|parallel.tp=2 parallel.dp=1 data.global_batch_size=16"
  "ep2|2|parallel.ep=2 parallel.dp=2 data.global_batch_size=32"
  "dualpipe_pp2|2|parallel.pp=2 parallel.dp=1 parallel.pipeline.schedule=dualpipe data.global_batch_size=32"
)
results=()
for entry in "${layouts[@]}"; do
  IFS='|' read -r name ranks overrides <<< "$entry"
  dir=$out/$name
  args=("$tandem" train "$config" --set "parallel.backend=$backend" --set "data.path=$corpus" --set "run.output_dir=$dir" --set "train.steps=$steps"
        --set "train.eval_interval=0" --set "logging.trace_steps=[$trace_step]" --set "checkpoint.interval=0"
        --set "checkpoint.save_on_exit=false" "${sets[@]}")
  for o in $overrides; do args+=(--set "$o"); done
  if [ "$ranks" -gt 1 ]; then
    read -ra launcher <<< "$mpirun"
    args=("${launcher[@]}" -np "$ranks" -x NCCL_NVLS_ENABLE=0 "${args[@]}")
  fi
  echo "== $name ($ranks GPU)" >&2
  if [ "$dry" = 1 ]; then echo "+ NCCL_NVLS_ENABLE=0 ${args[*]}"; continue; fi
  status=0
  NCCL_NVLS_ENABLE=0 "${args[@]}" > "$dir.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "   $name: exit $status (see $dir.log): $(grep -m1 -iE 'error|refus' "$dir.log" || true)" >&2
    echo "{\"label\": \"$name (unsupported: exit $status)\", \"gpus\": $ranks, \"tokens_per_s\": 0}" > "$dir.result.json"
    results+=("$dir.result.json")
    continue
  fi
  hidden=null
  traces=("$dir"/traces/step"$trace_step"/rank*.json)
  if [ -f "${traces[0]}" ]; then
    hidden=$("$python" "$here/trace_overlap.py" "${traces[@]}" | "$python" -c 'import json,sys; v=json.load(sys.stdin)["a2a_hidden"]; print("null" if v is None else v)')
  fi
  "$python" - "$dir/metrics.jsonl" "$name" "$ranks" "$skip" "$hidden" > "$dir.result.json" <<'EOF'
import json, statistics, sys
path, name, ranks, skip, hidden = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
steps = [json.loads(line) for line in open(path) if line.strip()]
timed = [s["tokens_per_s"] for s in steps[skip:]] or [s["tokens_per_s"] for s in steps]
print(json.dumps({"label": name, "gpus": ranks, "tokens_per_s": statistics.median(timed),
                  "a2a_hidden": None if hidden == "null" else float(hidden)}))
EOF
  results+=("$dir.result.json")
done
[ "$dry" = 1 ] && exit 0
"$python" "$here/bench_table.py" --scaling --baseline 1gpu "${results[@]}" | tee "$out/table.md"
echo "(logs and results in $out)" >&2
