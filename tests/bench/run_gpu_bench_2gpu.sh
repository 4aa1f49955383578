#!/usr/bin/env bash
# Scaling of the MoE benchmark job (configs/bench/moe_1b.yaml) from 1 to 2 GPUs with
# `tandem train` (docs/benchmarks.md, "Two GPUs"): the 1-GPU run, then dp2, tp2, ep2 (over dp2)
# and DualPipe pp2 with one rank per GPU, and pp2 x dp2 x ep2 on 4 ranks, two per GPU, under
# DualPipe and under 1F1B (the no-overlap contrast). Per run:
#  - tokens/s: the median of metrics.jsonl's tokens_per_s over the steps after --skip;
#  - scaling efficiency = tokens/s / (2 x the 1-GPU tokens/s) (bench_table.py --scaling);
#  - all-to-all hidden: for runs with expert parallelism, the fraction of the dispatch/combine
#    exchange time of step --trace-step (logging.trace_steps) during which the rank computed
#    instead of waiting, from the exchange timelines the trainer writes
#    (traces/stepN/exchanges/rankR.json; scale_report.py's exchange_stats, defined in
#    docs/benchmarks.md "Pipeline and expert parallelism at scale");
#    On GPUs that is the host's view (an NCCL wait returns at once), so the step is also recorded
#    with Kineto (logging.trace_kernels) and "hidden (GPU kernels)" is the part of the all-to-all
#    NCCL kernels' time during which the same rank's compute kernels ran (trace_overlap.py --cat
#    kernel over traces/stepN/kernels/rankR.json; other NCCL kernels count as neither);
#  - that step as Chrome traces in --out: NAME.stepN.exchanges.json (every rank's exchanges),
#    for pipelines NAME.stepN.pipeline.json (measured ops next to their re-simulation), and for
#    the ep runs NAME.stepN.kernels.rank0.json (rank 0's Kineto trace, device kernels per stream);
#  - peak GPU memory (GiB, the largest GPU, nvidia-smi sampled every 0.5 s; GPU runs only).
# Why 4 ranks on 2 GPUs: DualPipe hides an all-to-all under the paired micro-batch's compute
# only when the run has expert parallelism, and pp2 on 2 GPUs leaves one rank per stage (no ep).
# With 4 ranks in the default order (tp-dp-pp) rank = dp + 2 pp and GPU = local rank % 2, so
# the dp/ep groups {0,1} and {2,3} each span both GPUs (NCCL) and the pipeline pairs {0,2},
# {1,3} sit on one GPU each (host-staged MPI, as every pipeline group); the world group shares
# GPUs, so `tandem train` keeps it host-staged (tests/mpi/process_grid_mpi_test.cpp checks this).
# Every rank keeps micro_batch_size x seq_length tokens per micro-batch; the global batches
# follow the layout (see `layouts` below). A layout that fails becomes a row marked failed
# (GPU runs) instead of stopping the script. Prints ONE table, also written to --out/table.md.
#
#   tests/bench/run_gpu_bench_2gpu.sh            # on a 2-GPU machine, after ./bootstrap.sh test (which builds)
#   tests/bench/run_gpu_bench_2gpu.sh --smoke    # every layout on CPU ranks, tiny widths: the plumbing only
#   tests/bench/run_gpu_bench_2gpu.sh --dry-run  # print the commands only
#
# Options: --tandem PATH (build/bin/tandem), --mpirun CMD (mpirun), --python PY, --steps N (10),
# --skip N (4), --trace-step N (8), --backend nccl|mpi (parallel.backend; nccl), --out DIR
# (build/bench-results-2gpu), --layouts "NAME ..." (these, in this order; default all), --set
# key=value (for every run),
# --smoke (run.device=cpu, backend mpi, fp32, tiny widths, 4 steps; fails unless every layout
# runs and every ep layout yields a hidden fraction and a Chrome trace), --dry-run.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

tandem=$root/build/bin/tandem
mpirun=${MPIRUN:-mpirun}
python=
steps=10 skip=4 trace_step=8 dry=0 smoke=0 backend=nccl selected=
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
    --layouts) selected=$2; shift ;;
    --set) sets+=(--set "$2"); shift ;;
    --smoke) smoke=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run_gpu_bench_2gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=tests/bench/bench_python.sh
. "$here/bench_python.sh"
[ -n "$python" ] || python=$(bench_python "$root")
report=$here/scale_report.py
config=$root/configs/bench/moe_1b.yaml
# Its layouts use tp, ep and pp, whose collectives a CUDA graph cannot record.
device_sets=(--set train.cuda_graph=false)
if [ "$smoke" = 1 ]; then
  steps=4 skip=1 trace_step=3 backend=mpi
  device_sets+=(--set run.device=cpu --set train.precision=fp32 --set model.vocab_size=320 --set model.hidden_size=64
               --set model.num_hidden_layers=4 --set model.moe_intermediate_size=32 --set model.num_attention_heads=4
               --set model.num_key_value_heads=4 --set data.seq_length=64 --set model.max_position_embeddings=64
               --set data.micro_batch_size=2)
fi
[ "$trace_step" -ge 1 ] && [ "$trace_step" -le "$steps" ] || { echo "run_gpu_bench_2gpu.sh: --trace-step must lie in 1..--steps" >&2; exit 2; }
mkdir -p "$out"
bench_launcher "$mpirun"
launcher+=(-x NCCL_NVLS_ENABLE=0)

# A corpus for `tandem train`: the repository's own sources and docs (bench_python.sh).
corpus=$out/corpus
if [ "$dry" = 1 ]; then
  echo "+ $tandem preprocess --input <the repository's sources and docs> --output $corpus --split-on file"
else
  bench_corpus "$root" "$tandem" "$corpus"
fi

# name | ranks | GPUs | overrides. micro_batch_size 4 (smoke: 2); per pipeline or data-parallel
# replica 4 micro-batches (1 GPU, tp2) or 8 (the rest; DualPipe needs >= 2 x pp).
layouts=(
  "1gpu|1|1|parallel.dp=1 data.global_batch_size=16"
  "dp2|2|2|parallel.dp=2 data.global_batch_size=32"
  "tp2|2|2|parallel.tp=2 parallel.dp=1 data.global_batch_size=16"
  "ep2|2|2|parallel.ep=2 parallel.dp=2 data.global_batch_size=32"
  "pp2_dualpipe|2|2|parallel.pp=2 parallel.dp=1 parallel.pipeline.schedule=dualpipe data.global_batch_size=32"
  "pp2_dp2_ep2_dualpipe|4|2|parallel.pp=2 parallel.dp=2 parallel.ep=2 parallel.pipeline.schedule=dualpipe data.global_batch_size=64"
  "pp2_dp2_ep2_1f1b|4|2|parallel.pp=2 parallel.dp=2 parallel.ep=2 parallel.pipeline.schedule=1f1b data.global_batch_size=64"
)

# peak_gib LOG: the largest memory.used (MiB) of any GPU in nvidia-smi's CSV samples, in GiB.
peak_gib() { awk -F', *' '$2 + 0 > m { m = $2 + 0 } END { if (m > 0) printf "%.1f", m / 1024; else print "null" }' "$1" 2>/dev/null || echo null; }

# --layouts picks the runs and their order (the first ones finish first should time run out).
if [ -n "$selected" ]; then
  ordered=()
  for want in $selected; do
    found=0
    for entry in "${layouts[@]}"; do [ "${entry%%|*}" = "$want" ] && { ordered+=("$entry"); found=1; }; done
    [ "$found" = 1 ] || { echo "run_gpu_bench_2gpu.sh: --layouts: no layout $want" >&2; exit 2; }
  done
  layouts=("${ordered[@]}")
fi

results=() failed=()
for entry in "${layouts[@]}"; do
  IFS='|' read -r name ranks gpus overrides <<< "$entry"
  dir=$out/$name
  # The global batch divided by the smoke's micro-batch of 2 keeps the micro-batch count: halve it.
  [ "$smoke" = 1 ] && overrides=$(echo "$overrides" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^data.global_batch_size=/) { split($i, kv, "="); $i = kv[1] "=" kv[2] / 2 } print }')
  args=("$tandem" train "$config" --set "parallel.backend=$backend" --set "data.path=$corpus" --set "run.output_dir=$dir"
        --set "train.steps=$steps" --set "train.eval_interval=0" --set "logging.trace_steps=[$trace_step]"
        --set "checkpoint.interval=0" --set "checkpoint.save_on_exit=false" --set "logging.tensorboard=false"
        --set "logging.trace_kernels=true"
        "${device_sets[@]}" "${sets[@]}")
  for o in $overrides; do args+=(--set "$o"); done
  args=("${launcher[@]}" -np "$ranks" "${args[@]}")
  echo "== $name ($ranks rank(s) on $gpus GPU(s))" >&2
  if [ "$dry" = 1 ]; then echo "+ NCCL_NVLS_ENABLE=0 ${args[*]}"; continue; fi
  rm -rf "$dir"
  sampler=
  if [ "$smoke" = 0 ] && command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$dir.memory.csv" 2>/dev/null &
    sampler=$!
  fi
  status=0 start=$SECONDS
  NCCL_NVLS_ENABLE=0 "${args[@]}" > "$dir.log" 2>&1 || status=$?
  [ -z "$sampler" ] || { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; }
  echo "   $((SECONDS - start)) s, exit $status" >&2
  if [ "$status" -ne 0 ] || [ ! -s "$dir/metrics.jsonl" ]; then
    echo "   $name: exit $status (see $dir.log): $(grep -m1 -iE 'error|refus' "$dir.log" | cut -c1-200 || true)" >&2
    echo "{\"label\": \"$name (failed: exit $status)\", \"gpus\": $gpus, \"tokens_per_s\": 0}" > "$dir.result.json"
    results+=("$dir.result.json") failed+=("$name")
    continue
  fi
  traced=$dir/traces/step$trace_step
  if [ -d "$traced/exchanges" ]; then
    "$python" "$report" chrome "$traced/exchanges" --out "$out/$name.step$trace_step.exchanges.json"
  fi
  [ ! -f "$traced/compare.chrome.json" ] || cp "$traced/compare.chrome.json" "$out/$name.step$trace_step.pipeline.json"
  hidden_gpu=null
  if [ -f "$traced/kernels/rank0.json" ]; then
    hidden_gpu=$("$python" "$here/trace_overlap.py" --cat kernel --comm 'SendRecv|AllToAll|all_to_all' --not-compute nccl \
                   "$traced"/kernels/rank*.json |
                 "$python" -c 'import json,sys; v = json.load(sys.stdin)["a2a_hidden"]; print("null" if v is None else v)')
    case $name in
      *ep2*) "$python" "$report" kernels "$traced/kernels/rank0.json" --out "$out/$name.step$trace_step.kernels.rank0.json" ;;
    esac
  fi
  peak=null
  [ -z "$sampler" ] || peak=$(peak_gib "$dir.memory.csv")
  "$python" - "$here" "$dir/metrics.jsonl" "$traced/exchanges" "$name" "$ranks" "$gpus" "$skip" "$peak" "$hidden_gpu" \
    > "$dir.result.json" <<'EOF'
import json, os, sys
here, metrics, exchanges, name, ranks, gpus, skip, peak, hidden_gpu = sys.argv[1:10]
sys.path.insert(0, here)
from scale_report import exchange_stats, median_tokens_per_s
tokens_per_s, _ = median_tokens_per_s(metrics, int(skip))
a2a = exchange_stats(exchanges) if os.path.isdir(exchanges) else None
print(json.dumps({"label": name, "gpus": int(gpus), "ranks": int(ranks), "tokens_per_s": tokens_per_s,
                  "a2a_hidden": a2a["hidden"] if a2a else None, "a2a": a2a,
                  "a2a_hidden_gpu": None if hidden_gpu == "null" else float(hidden_gpu),
                  "peak_gib": None if peak == "null" else float(peak)}))
EOF
  results+=("$dir.result.json")
  # The table so far, in case the caller's time runs out before the last layout.
  "$python" "$here/bench_table.py" --scaling --baseline 1gpu "${results[@]}" > "$out/table.md" 2> /dev/null || true
done
[ "$dry" = 1 ] && exit 0
"$python" "$here/bench_table.py" --scaling --baseline 1gpu "${results[@]}" | tee "$out/table.md"
echo "(logs, results and Chrome traces in $out)" >&2
if [ "$smoke" = 1 ]; then
  # The plumbing check: every layout ran, and every run with expert parallelism traced its
  # exchanges (a hidden fraction and a Chrome trace).
  problems=("${failed[@]/%/: failed}")
  for r in "${results[@]}"; do
    name=$(basename "$r" .result.json)
    case $name in *ep2*) ;; *) continue ;; esac
    "$python" -c 'import json,sys; r = json.load(open(sys.argv[1])); sys.exit(r.get("a2a_hidden") is None)' "$r" ||
      problems+=("$name: no all-to-all hidden fraction")
    [ -s "$out/$name.step$trace_step.exchanges.json" ] || problems+=("$name: no Chrome trace of step $trace_step")
  done
  if [ ${#problems[@]} -gt 0 ] && [ -n "${problems[0]}" ]; then
    printf 'smoke: %s\n' "${problems[@]}" >&2
    exit 1
  fi
  echo "smoke: all ${#results[@]} layouts ran; the ep layouts traced their exchanges" >&2
fi
