#!/usr/bin/env bash
# tandem against plain PyTorch eager on one GPU: for each benchmark job (configs/bench/
# dense_1b.yaml and moe_1b.yaml by default) runs tandem_train_bench (tandem's model, AdamW and
# MoE kernels) and tests/bench/reference_model.py (the same architecture, batch, precision and
# AdamW in eager PyTorch) one after the other on the same device, then prints ONE table:
# tokens/s of both, the tandem/PyTorch ratio, MFU (the model's training FLOPs over
# hardware.gpu_tflops) and peak allocated memory. Results (JSON lines, the table) go to --out.
#
#   tests/bench/run_gpu_bench.sh                 # on the GPU machine, after ./bootstrap.sh test (which builds)
#   tests/bench/run_gpu_bench.sh --smoke         # tiny models on the CPU: checks the plumbing
#
# Options: --bench PATH (tandem_train_bench; default build/bin), --python PY (default
# /opt/torch/.venv/bin/python, else .venv/bin/python, else python3), --steps N (10), --warmup N
# (3), --models "dense_1b moe_1b", --out DIR (build/bench-results), --set key=value (passed to
# tandem_train_bench for every model, e.g. --set data.micro_batch_size=8).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

bench=$root/build/bin/tandem_train_bench
python=
steps=10 warmup=3 smoke=0
models="dense_1b moe_1b"
out=$root/build/bench-results
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --bench) bench=$2; shift ;;
    --python) python=$2; shift ;;
    --steps) steps=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --models) models=$2; shift ;;
    --out) out=$2; shift ;;
    --set) sets+=(--set "$2"); shift ;;
    -h|--help) sed -n '2,/^set/{/^#/p}' "$0"; exit 0 ;;
    *) echo "run_gpu_bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=tests/bench/bench_python.sh
. "$here/bench_python.sh"
[ -n "$python" ] || python=$(bench_python "$root")
[ -x "$bench" ] || { echo "run_gpu_bench.sh: $bench not built (./bootstrap.sh test builds it, or cmake --build build --target tandem_train_bench)" >&2; exit 2; }

device=cuda
check_loss=()
if [ "$smoke" = 1 ]; then
  # Tiny versions of the same jobs on the CPU, fp32: seconds, no GPU. The table script then also
  # checks that both losses sit near ln(vocab) for this random-token batch.
  device=cpu steps=2 warmup=1
  [ "$out" = "$root/build/bench-results" ] && out=$(mktemp -d)
  sets+=(--set run.device=cpu --set train.precision=fp32 --set model.vocab_size=512 --set model.hidden_size=64
         --set model.num_hidden_layers=2 --set model.intermediate_size=128 --set model.moe_intermediate_size=32
         --set model.num_attention_heads=4 --set model.num_key_value_heads=4 --set data.seq_length=64
         --set data.micro_batch_size=2 --set data.global_batch_size=2)
  check_loss=(--check-loss "$("$python" -c 'import math; print(math.log(512))')")
fi
mkdir -p "$out"

results=()
for model in $models; do
  config=$root/configs/bench/$model.yaml
  [ -f "$config" ] || { echo "run_gpu_bench.sh: no job $config" >&2; exit 2; }
  echo "== $model: tandem" >&2
  "$bench" "$config" --steps "$steps" --warmup "$warmup" --label "$model" --model-json "$out/$model.model.json" \
    "${sets[@]}" | tee "$out/$model.tandem.json" >&2
  echo "== $model: PyTorch eager reference" >&2
  "$python" "$here/reference_model.py" --model-json "$out/$model.model.json" --steps "$steps" --warmup "$warmup" \
    --label "$model" --device "$device" | tee "$out/$model.pytorch.json" >&2
  results+=("$out/$model.tandem.json" "$out/$model.pytorch.json")
done

"$python" "$here/bench_table.py" "${check_loss[@]}" "${results[@]}" | tee "$out/table.md"
echo "(results in $out)" >&2
