#!/usr/bin/env bash
# Checkpoint resharding through the real binary, on the layout matrix's micro model
# (train_test_common.sh): a run under layout A trains 20 steps and checkpoints at step 10; that
# checkpoint is resumed under layout B for steps 11-20. B's losses (and grad norms) must match
# the uninterrupted A run to a relative 1e-5 at every step, and B's final checkpoint A's final
# one (parameters, AdamW moments, routing biases by global name) to 1e-5. The optimizer state
# reshards with the parameters: across dp/tp/ep and across ZeRO stages (ZeRO-3's parameter
# shards included). `tandem checkpoint inspect` must list and verify every checkpoint written.
# Usage: train_reshard_test.sh TANDEM_BINARY CHECKPOINT_DIFF SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 checkpoint_diff=$2 source_dir=$3; shift 3
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
tolerance=1e-5

# inspect_ok CHECKPOINT_DIR RANKS: inspect verifies every file and lists the step, the layout's
# ranks and the three state kinds of a tensor (stored as pieces by whichever ranks owned them)
inspect_ok() {
  "$tandem" checkpoint inspect "$1" >"$work/inspect.txt" 2>&1 && grep -q "^  step 10," "$work/inspect.txt" &&
    grep -q "layout: $2 ranks" "$work/inspect.txt" && [ "$(grep -c " model.embed_tokens.weight$" "$work/inspect.txt")" = 3 ]
}

# name | A ranks | A overrides | B ranks | B overrides
pairs=(
  "dp2 -> dp4+zero1|2|--set parallel.dp=2|4|--set parallel.dp=4 --set parallel.zero=1"
  "tp2 -> tp1|2|--set parallel.tp=2|1|--set parallel.tp=1"
  "ep2 -> ep4|2|--set parallel.ep=2|4|--set parallel.ep=4"
  "dp4+zero3 -> dp2+tp2+zero2|4|--set parallel.dp=4 --set parallel.zero=3|4|--set parallel.dp=2 --set parallel.tp=2 --set parallel.zero=2"
)
echo "worst relative difference of resumed steps 11-20 vs the uninterrupted run: metrics | final tensors"
for entry in "${pairs[@]}"; do
  IFS='|' read -r name a_ranks a_overrides b_ranks b_overrides <<<"$entry"
  a=$(echo "${name%% ->*}" | tr -c 'a-z0-9+\n' '_') b=$(echo "$name" | tr -c 'a-z0-9+\n' '_')
  start=$SECONDS
  if [ ! -d "$work/$a" ]; then
    # shellcheck disable=SC2086  # the overrides are words
    train_micro "$a" "$a_ranks" $a_overrides --set checkpoint.interval=10 || { fail "$name: run A exited non-zero"; continue; }
  fi
  checkpoint=$work/$a/checkpoints/step_00000010
  inspect_ok "$checkpoint" "$a_ranks" || { fail "$name: tandem checkpoint inspect $checkpoint"; head -5 "$work/inspect.txt"; }
  # shellcheck disable=SC2086
  train_micro "$b" "$b_ranks" $b_overrides --set checkpoint.resume="$checkpoint" ||
    { fail "$name: resume under B exited non-zero"; grep -iE "error" "$work/$b.log" | head -3; continue; }
  read -r metric at_step at_field < <(metric_diff "$work/$b/metrics.jsonl" "$work/$a/metrics.jsonl" "loss lm_loss mtp_loss grad_norm")
  steps=$(grep -c '"step"' "$work/$b/metrics.jsonl")
  tensors=$("$checkpoint_diff" "$work/$b/checkpoints" "$work/$a/checkpoints" --tolerance "$tolerance"); tensors_rc=$?
  tensor_worst=$(echo "$tensors" | sed -nE 's/.*worst relative difference ([^ ]+) \((.*)\)$/\1 (\2)/p' | tail -1)
  if grep -q "resumed from .*step_00000010" "$work/$b.log" && [ "$steps" = 10 ] && within "$metric" "$tolerance" &&
     [ "$tensors_rc" -eq 0 ]; then
    ok "$(printf '%-28s %3ss  metrics %s (step %s %s) | tensors %s' "$name" $((SECONDS - start)) "$metric" "$at_step" \
      "$at_field" "$tensor_worst")"
  else
    fail "$name: $steps resumed steps, metrics $metric (step $at_step $at_field), tensors $tensor_worst"
    echo "$tensors" | head -5
  fi
done
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
