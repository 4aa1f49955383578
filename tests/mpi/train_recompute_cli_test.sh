#!/usr/bin/env bash
# `tandem train` with activation recomputation (train.recompute) under the layouts where it
# meets the most machinery, on the micro model of the layout tests (fp32, CPU): every run with
# recomputation logs metrics bit-identical to the same layout without it (losses, gradient
# norm, balance loss, expert imbalance, eval loss), so the recomputed forward saw the same
# weights, routed the same tokens and its side effects (load counts, logged losses) happened once:
#  1. DualPipe over 4 pipeline ranks (overlapped forward/backward pairs on two threads, W queue):
#     selective, full, and full for the first layer of each stage;
#  2. DualPipe pp2 x dp2 x ep2 (the recomputed forward's expert all-to-alls inside an overlapped
#     pair, yielding to the other side): full;
#  3. dp4 x ep2 + ZeRO-3 (parameters gathered by the layer hooks for the recomputation): full and
#     selective.
# Usage: train_recompute_cli_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
micro_model+=(--set train.steps=6 --set train.eval_interval=6 --set logging.log_interval=1)
# The metrics of a run without its timing fields, one line per step.
metrics() { sed -E 's/"(tokens_per_s|mfu|step_time_s)":[^,}]*,?//g' "$1/metrics.jsonl"; }
# same NAME REFERENCE WHAT: NAME's metrics equal REFERENCE's bit for bit.
same() {
  local lines
  lines=$(grep -c '"step"' "$work/$1/metrics.jsonl" 2>/dev/null)
  if [ "${lines:-0}" -ge 6 ] && diff <(metrics "$work/$1") <(metrics "$work/$2") >/dev/null; then
    ok "$3: $lines steps bit-identical to no recomputation"
  else
    fail "$3: differs from no recomputation ($(tail -1 "$work/$1.log"))"
    diff <(metrics "$work/$1") <(metrics "$work/$2") | head -4
  fi
}

dualpipe=(--set parallel.pp=4 --set parallel.pipeline.schedule=dualpipe --set model.num_hidden_layers=4)
train_micro pp4_none 4 "${dualpipe[@]}" || fail "dualpipe pp4 exited $?"
train_micro pp4_selective 4 "${dualpipe[@]}" --set train.recompute=selective && same pp4_selective pp4_none \
  "dualpipe pp4, selective" || fail "dualpipe pp4 selective exited $?"
train_micro pp4_full 4 "${dualpipe[@]}" --set train.recompute=full && same pp4_full pp4_none "dualpipe pp4, full" ||
  fail "dualpipe pp4 full exited $?"

composed=(--set parallel.pp=2 --set parallel.pipeline.schedule=dualpipe --set parallel.ep=2
          --set model.num_hidden_layers=4)
train_micro pp2ep2_none 4 "${composed[@]}" || fail "pp2 x dp2 x ep2 exited $?"
train_micro pp2ep2_full 4 "${composed[@]}" --set train.recompute=full --set train.recompute_layers=1 &&
  same pp2ep2_full pp2ep2_none "dualpipe pp2 x dp2 x ep2, full (first layer of each stage)" ||
  fail "pp2 x dp2 x ep2 full exited $?"

zero3=(--set parallel.dp=4 --set parallel.ep=2 --set parallel.zero=3)
train_micro zero3_none 4 "${zero3[@]}" || fail "dp4 x ep2 + zero3 exited $?"
for mode in full selective; do
  train_micro "zero3_$mode" 4 "${zero3[@]}" --set train.recompute=$mode && same "zero3_$mode" zero3_none \
    "dp4 x ep2 + zero3, $mode" || fail "dp4 x ep2 + zero3 $mode exited $?"
done

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
