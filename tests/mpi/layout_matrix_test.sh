#!/usr/bin/env bash
# The layout equivalence matrix (issue 7), through the real binary: a micro MoE (the default
# job's architecture with small sizes: MLA, 1 shared + 8 routed experts, MTP; fp32 on CPU), a fixed
# seed, 20 steps, the same global batch in every layout. Each layout's metrics.jsonl must match the
# single-process run at every step (loss, lm/mtp loss, grad norm, and the final eval loss) to a
# relative 1e-5, and its final checkpoint (parameters, AdamW moments, routing biases, assembled by
# global name from whatever shards wrote them) to a relative 1e-5 per tensor. Prints the worst
# relative difference per layout.
# Usage: layout_matrix_test.sh TANDEM_BINARY CHECKPOINT_DIFF SOURCE_DIR MAX_RANKS MPIEXEC...
#   Layouts needing more than MAX_RANKS ranks are skipped (and say so).
set -uo pipefail
tandem=$1 checkpoint_diff=$2 source_dir=$3 max_ranks=$4; shift 4
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
tolerance=1e-5
# Small enough that the 20 layouts below run in a few minutes on 2 cores; every size divides by
# tp 4 (heads, vocabulary, MLP widths, sequence) and the 8 experts by ep 4. Batch: 8 sequences of
# 32 tokens per step, micro-batches of 1 (8 per step on one rank, 2 per rank under dp4).
# AdamW's eps is 1e-5 (Llama 2's value) rather than the default job's 1e-8: gradient elements
# within ~1e-8 of zero (every tensor has some) are rounding noise in fp32, and with eps = 1e-8
# AdamW turns that noise into steps of up to lr, so the weights of ANY two runs whose reductions
# round differently (plain dp2 included) drift apart by ~1e-4 of their scale within 20 steps.
# That tests AdamW's conditioning, not the layout; eps = 1e-5 keeps the comparison about layouts.
micro=(--set data.path="$data" --set model.hidden_size=32 --set model.num_hidden_layers=2
       --set model.intermediate_size=64 --set model.moe_intermediate_size=16 --set model.num_attention_heads=4
       --set model.kv_lora_rank=16 --set model.qk_nope_head_dim=8 --set model.qk_rope_head_dim=8
       --set model.v_head_dim=8 --set data.seq_length=32 --set data.global_batch_size=8
       --set data.micro_batch_size=1 --set train.steps=20 --set train.precision=fp32 --set run.device=cpu
       --set train.eval_interval=20 --set train.eval_steps=1 --set optim.warmup_steps=5
       --set logging.log_interval=20 --set logging.tensorboard=false --set checkpoint.interval=0
       --set optim.eps=1e-5 "${one_stage[@]}")

train() {  # train NAME RANKS ARGS...
  local name=$1 ranks=$2; shift 2
  timeout 300 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${micro[@]}" \
    --set run.output_dir="$work/$name" "$@" >"$work/$name.log" 2>&1
}

if ! train ref 1 --set parallel.dp=1; then
  echo "FAIL: the single-process reference run exited non-zero"; tail -20 "$work/ref.log"; exit 1
fi
# name | ranks | overrides
layouts=(
  "dp2|2|--set parallel.dp=2"
  "dp4|4|--set parallel.dp=4"
  "tp2|2|--set parallel.tp=2"
  "tp2+sp|2|--set parallel.tp=2 --set parallel.sequence_parallel=true"
  "tp4|4|--set parallel.tp=4"
  "tp4+sp|4|--set parallel.tp=4 --set parallel.sequence_parallel=true"
  "ep2 (over dp2)|2|--set parallel.ep=2"
  "ep4 (over dp4)|4|--set parallel.ep=4"
  "dp2+tp2|4|--set parallel.dp=2 --set parallel.tp=2"
  "dp2+ep2|2|--set parallel.dp=2 --set parallel.ep=2"
  "dp4+ep2 (edp2)|4|--set parallel.dp=4 --set parallel.ep=2"
  "tp2+ep2 (ep over tp)|2|--set parallel.tp=2 --set parallel.ep=2"
  "zero1 dp2|2|--set parallel.dp=2 --set parallel.zero=1"
  "zero1 dp4|4|--set parallel.dp=4 --set parallel.zero=1"
  "dp2+tp2+ep2+zero1|4|--set parallel.dp=2 --set parallel.tp=2 --set parallel.ep=2 --set parallel.zero=1"
  # ZeRO 2/3 (zero2/zero3 with dp2 and dp4, and dp4+tp2+ep4+zero2 on 8 ranks) join when the
  # trainer runs them (the bucketed data-parallel optimizer).
)
skipped=0
echo "worst relative difference per layout: per-step metrics (step, field) | final tensors (tensor)"
for entry in "${layouts[@]}"; do
  IFS='|' read -r name ranks overrides <<<"$entry"
  if [ "$ranks" -gt "$max_ranks" ]; then
    printf '%-22s %s ranks: skipped (more than %s ranks)\n' "$name" "$ranks" "$max_ranks"; skipped=$((skipped + 1)); continue
  fi
  dir=$(echo "$name" | tr -c 'a-z0-9+\n' '_')
  start=$SECONDS
  # shellcheck disable=SC2086  # the overrides are words
  if ! train "$dir" "$ranks" $overrides; then
    printf '%-22s %s ranks: FAIL, exited non-zero\n' "$name" "$ranks"; grep -E "error|Error" "$work/$dir.log" | head -5
    failures=$((failures + 1)); continue
  fi
  seconds=$((SECONDS - start))
  read -r metric metric_at_step metric_at_field < <(metric_diff "$work/$dir/metrics.jsonl" "$work/ref/metrics.jsonl" \
    "loss lm_loss mtp_loss grad_norm eval_loss")
  [ "$(wc -l <"$work/$dir/metrics.jsonl")" = "$(wc -l <"$work/ref/metrics.jsonl")" ] || metric="inf"
  tensors=$("$checkpoint_diff" "$work/$dir/checkpoints" "$work/ref/checkpoints" --tolerance "$tolerance"); tensors_rc=$?
  tensor_worst=$(echo "$tensors" | sed -nE 's/.*worst relative difference ([^ ]+) \((.*)\)$/\1 (\2)/p' | tail -1)
  verdict=ok
  if [ "$tensors_rc" -ne 0 ] || ! within "$metric" "$tolerance"; then
    verdict=FAIL
  fi
  printf '%-22s %s ranks %4ss  metrics %s (step %s %s) | tensors %s  %s\n' "$name" "$ranks" "$seconds" "$metric" \
    "$metric_at_step" "$metric_at_field" "$tensor_worst" "$verdict"
  if [ "$verdict" = ok ]; then passed=$((passed + 1)); else failures=$((failures + 1)); echo "$tensors" | head -5; fi
done
echo "$passed layouts match the single-process run to a relative $tolerance, $failures differ, $skipped skipped"
[ "$failures" -eq 0 ]
