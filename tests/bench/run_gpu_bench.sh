#!/usr/bin/env bash
# tandem against its peers on one GPU, side by side in one run: for each benchmark job
# (configs/bench/dense_1b.yaml, moe_1b.yaml and moe_4b.yaml by default) runs tandem_train_bench
# (tandem's model, AdamW and MoE kernels), then on the same device the same architecture, batch,
# precision and AdamW in
#   pytorch     tests/bench/reference_model.py: plain eager PyTorch (the floor);
#   torchtitan  tests/bench/peers/torchtitan_peer.py: torchtitan 0.2.1's DeepSeek-V3 model and step,
#               torch.compile per block, grouped-GEMM experts, its fastest attention (no MTP in
#               0.2.x: it runs against a tandem variant "<model>_nomtp" without MTP);
#   megatron    tests/bench/peers/megatron_peer.py: Megatron-Core 0.19.2's GPTModel (local spec:
#               Transformer Engine is not installable offline), its DDP and distributed optimizer;
# and prints ONE table: tokens/s of each, the tandem/peer ratios, MFU (the model's training FLOPs
# over hardware.gpu_tflops), peak memory and the expert imbalance (max/mean tokens per expert).
# MoE jobs run with forced balanced routing in every implementation (token n's k-th expert is
# (n*K + k) mod E, torchtitan's rule) so that all route the same, even load; --natural-routing
# lets each router choose. A peer that cannot express a job (e.g. torchtitan's DeepSeek-V3 and a
# GQA model) is reported and skipped. With --memory also: moe_1b under train.recompute none,
# selective and full, and at sequence 32768 (YaRN, full recomputation; also beside torchtitan with
# its full activation checkpointing, without MTP), each with its measured peak against
# check-config's estimate (bench_table.py --memory). Results (JSON lines, the
# tables) go to --out.
#
#   tests/bench/run_gpu_bench.sh --install-peers --memory   # on the GPU machine, after ./bootstrap.sh test
#   tests/bench/run_gpu_bench.sh --smoke                    # tiny models on the CPU: checks the plumbing
#
# Options: --bench PATH (tandem_train_bench; default build/bin), --python PY (default
# /opt/torch/.venv/bin/python, else .venv/bin/python, else python3), --steps N (10), --warmup N
# (3), --models "dense_1b moe_1b moe_4b", --peers "pytorch torchtitan megatron", --out DIR
# (build/bench-results), --set key=value (passed to tandem_train_bench for every model),
# --install-peers (pip-installs the wheels of .whl/torchtitan and .whl/megatron, carried to the
# offline GPU machine, into $TANDEM_PEER_SITE/{torchtitan,megatron}, default /tmp/tandem-peers),
# --natural-routing, --memory.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

bench=$root/build/bin/tandem_train_bench
python=
steps=10 warmup=3 smoke=0
models="dense_1b moe_1b moe_4b"
peers="pytorch torchtitan megatron"
out=$root/build/bench-results
sets=()
install_peers=0 balanced=1 memory=0
peer_site=${TANDEM_PEER_SITE:-/tmp/tandem-peers}
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --bench) bench=$2; shift ;;
    --python) python=$2; shift ;;
    --steps) steps=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --models) models=$2; shift ;;
    --peers) peers=$2; shift ;;
    --install-peers) install_peers=1 ;;
    --natural-routing) balanced=0 ;;
    --memory) memory=1 ;;
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
  sets+=(--set run.device=cpu --set train.precision=fp32 --set train.cuda_graph=false --set model.vocab_size=512 --set model.hidden_size=64
         --set model.num_hidden_layers=2 --set model.intermediate_size=128 --set model.moe_intermediate_size=32
         --set model.num_attention_heads=4 --set model.num_key_value_heads=4 --set data.seq_length=64
         --set data.micro_batch_size=2 --set data.global_batch_size=2 --set model.q_lora_rank=32
         --set model.kv_lora_rank=32 --set model.qk_nope_head_dim=16 --set model.qk_rope_head_dim=8
         --set model.v_head_dim=16)
  check_loss=(--check-loss "$("$python" -c 'import math; print(math.log(512))')")
fi
mkdir -p "$out"

if [ "$install_peers" = 1 ]; then
  for peer in torchtitan megatron; do
    wheels=("$root/.whl/$peer"/*.whl)
    [ -e "${wheels[0]}" ] || { echo "run_gpu_bench.sh: no wheels in .whl/$peer (see tests/bench/peers/README.md)" >&2; continue; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$peer_site/$peer" \
      "${wheels[@]}" >&2
  done
fi
# Versions, for the record.
"$python" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' >&2

# run_tandem LABEL CONFIG ARGS...: one tandem_train_bench line into $out/LABEL.tandem.json (and the
# model JSON its peers build from into $out/LABEL.model.json).
run_tandem() {
  local label=$1 config=$2; shift 2
  echo "== $label: tandem" >&2
  "$bench" "$config" --steps "$steps" --warmup "$warmup" --label "$label" --model-json "$out/$label.model.json" \
    "${sets[@]}" "$@" | tee "$out/$label.tandem.json" >&2
}
# run_peer PEER LABEL ARGS...: one peer line into $out/LABEL.PEER.json, added to the results; a
# peer that is not installed or refuses the architecture (exit 2) is reported and skipped.
run_peer() {
  local peer=$1 label=$2; shift 2
  local file=$out/$label.$peer.json rc=0
  echo "== $label: $peer" >&2
  case $peer in
    pytorch) "$python" "$here/reference_model.py" --model-json "$out/$label.model.json" --steps "$steps" \
               --warmup "$warmup" --label "$label" --device "$device" "$@" > "$file" || rc=$? ;;
    torchtitan|megatron)
      PYTHONPATH="$peer_site/$peer${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$python" "$here/peers/${peer}_peer.py" \
        --model-json "$out/$label.model.json" --steps "$steps" --warmup "$warmup" --label "$label" --device "$device" \
        "$@" > "$file" || rc=$? ;;
    *) echo "run_gpu_bench.sh: unknown peer $peer" >&2; exit 2 ;;
  esac
  cat "$file" >&2
  if [ "$rc" = 0 ]; then
    results+=("$file")
  else
    echo "   $peer could not run $label (exit $rc): left out of the table" >&2
  fi
}
# A peer that has no MTP (torchtitan 0.2.x) runs against a tandem variant without it.
peer_without_mtp() { [ "$1" = torchtitan ]; }
# Whether PEER can be imported (eager PyTorch always can).
peer_installed() {
  local module=$1
  [ "$1" = pytorch ] && return 0
  [ "$1" = megatron ] && module=megatron.core
  PYTHONPATH="$peer_site/$1${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "import $module" 2>/dev/null
}

results=()
memory_results=()
for model in $models; do
  config=$root/configs/bench/$model.yaml
  [ -f "$config" ] || { echo "run_gpu_bench.sh: no job $config" >&2; exit 2; }
  routing=() peer_routing=()
  if [ "$balanced" = 1 ] && grep -Eq '^ *n_routed_experts: *[1-9]' "$config"; then
    routing=(--set model.force_balanced_routing=true) peer_routing=(--force-balanced)
  fi
  run_tandem "$model" "$config" "${routing[@]}"
  results+=("$out/$model.tandem.json")
  has_mtp=$("$python" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["num_nextn_predict_layers"] > 0))' \
    "$out/$model.model.json")
  nomtp_done=0
  for peer in $peers; do
    if ! peer_installed "$peer"; then
      echo "== $model: $peer is not installed (--install-peers): skipped" >&2
      continue
    fi
    label=$model
    if [ "$has_mtp" = 1 ] && peer_without_mtp "$peer"; then
      label=${model}_nomtp
      if [ "$nomtp_done" = 0 ]; then
        run_tandem "$label" "$config" "${routing[@]}" --set model.num_nextn_predict_layers=0
        results+=("$out/$label.tandem.json")
        nomtp_done=1
      fi
    fi
    run_peer "$peer" "$label" "${peer_routing[@]}"
  done
done

if [ "$memory" = 1 ]; then
  # Recomputation and long context: tandem's measured peak against check-config's estimate.
  config=$root/configs/bench/moe_1b.yaml
  for mode in none selective full; do
    run_tandem "moe_1b_recompute_$mode" "$config" --set train.recompute=$mode
    memory_results+=("$out/moe_1b_recompute_$mode.tandem.json")
  done
  long=(--set data.seq_length=32768 --set data.micro_batch_size=1 --set data.global_batch_size=1
        --set model.max_position_embeddings=32768 --set model.rope_scaling.type=yarn --set model.rope_scaling.factor=16
        --set model.rope_scaling.original_max_position_embeddings=2048 --set train.recompute=full)
  run_tandem moe_1b_32k "$config" "${long[@]}"
  memory_results+=("$out/moe_1b_32k.tandem.json")
  # The same long sequence beside torchtitan (no MTP there) with its own full activation
  # checkpointing, routed as the speed table is.
  if [[ " $peers " == *" torchtitan "* ]] && peer_installed torchtitan; then
    routing=() peer_routing=()
    [ "$balanced" = 1 ] && routing=(--set model.force_balanced_routing=true) peer_routing=(--force-balanced)
    run_tandem moe_1b_32k_nomtp "$config" "${long[@]}" --set model.num_nextn_predict_layers=0 "${routing[@]}"
    results+=("$out/moe_1b_32k_nomtp.tandem.json")
    memory_results+=("$out/moe_1b_32k_nomtp.tandem.json")
    run_peer torchtitan moe_1b_32k_nomtp "${peer_routing[@]}" --activation-checkpoint full
  fi
fi

status=0
"$python" "$here/bench_table.py" "${check_loss[@]}" "${results[@]}" | tee "$out/table.md" || status=1
if [ ${#memory_results[@]} -gt 0 ]; then
  "$python" "$here/bench_table.py" --memory "${memory_results[@]}" | tee "$out/memory.md" || status=1
fi
echo "(results in $out)" >&2
exit $status
