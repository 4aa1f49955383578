#!/usr/bin/env bash
# The layout equivalence matrix, through the real binary: the micro MoE of
# train_test_common.sh (the default job's architecture with small sizes), a fixed seed, 20 steps,
# the same global batch in every layout, gradients reduced in small buckets (several per group, so
# reductions overlap backward). Each layout's metrics.jsonl must match the single-process run at
# every step (loss, lm/mtp loss, grad norm, and the final eval loss) to a relative 1e-5, and its
# final checkpoint (parameters, AdamW moments, routing biases, assembled by global name from
# whatever shards wrote them) to a relative 1e-5 per tensor. Prints the worst relative difference
# per layout.
# Usage: layout_matrix_test.sh TANDEM_BINARY CHECKPOINT_DIFF SOURCE_DIR MAX_RANKS MPIEXEC...
#   Layouts needing more than MAX_RANKS ranks are skipped (and say so).
set -uo pipefail
tandem=$1 checkpoint_diff=$2 source_dir=$3 max_ranks=$4; shift 4
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
tolerance=1e-5

if ! train_micro ref 1 --set parallel.dp=1; then
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
  "zero2 dp2|2|--set parallel.dp=2 --set parallel.zero=2"
  "zero2 dp4|4|--set parallel.dp=4 --set parallel.zero=2"
  "zero3 dp2|2|--set parallel.dp=2 --set parallel.zero=3"
  "zero3 dp4|4|--set parallel.dp=4 --set parallel.zero=3"
  "dp2+tp2+ep2+zero1|4|--set parallel.dp=2 --set parallel.tp=2 --set parallel.ep=2 --set parallel.zero=1"
  "dp4+tp2+ep4+zero2|8|--set parallel.dp=4 --set parallel.tp=2 --set parallel.ep=4 --set parallel.zero=2"
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
  if ! train_micro "$dir" "$ranks" $overrides; then
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
