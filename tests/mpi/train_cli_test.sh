#!/usr/bin/env bash
# End-to-end checks of `tandem train` on the default job's corpus, with a smaller model so the
# whole script takes well under a minute on 2 cores:
#  1. exact resume: a run to step 8 checkpointed at 4 and resumed to 8 logs bit-identical losses
#     (every metrics.jsonl field that is not a timing) to a straight run to 8, on 2 ranks (dp2);
#  2. a corrupted latest checkpoint is detected and the previous one used;
#  3. SIGTERM mid-run: every rank exits 0 after writing a checkpoint of the step it finished;
#  4. bad input (missing dataset) exits 2 on every rank before training, and a pipeline job
#     started as one process exits 2 saying how to start it;
#  5. a fresh run into a directory that holds another run exits 2 naming it and the choices, and
#     --overwrite replaces that run (metrics.jsonl then holds each step once);
#  6. a resume that would change the learning rates of finished steps exits 2 unless confirmed
#     with checkpoint.allow_changes, and one that does not (more steps during warm-up) says so.
# Usage: train_cli_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
small=(--set data.path="$data" --set model.hidden_size=64 --set model.intermediate_size=128
       --set model.moe_intermediate_size=32 --set model.num_hidden_layers=2 --set data.seq_length=64
       --set data.global_batch_size=8 --set data.micro_batch_size=2 --set train.eval_interval=4
       --set logging.log_interval=4 --set logging.tensorboard=false "${one_stage[@]}")
train() {  # train OUTPUT_DIR RANKS ARGS...
  local out=$1 ranks=$2; shift 2
  timeout 120 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${small[@]}" \
    --set run.output_dir="$out" "$@" >"$out.log" 2>&1
}
# The metrics of a run without its timing fields, one line per step.
losses() { sed -E 's/"(tokens_per_s|mfu|step_time_s)":[^,}]*,?//g' "$1/metrics.jsonl"; }

# 1. exact resume
train "$work/straight" 2 --set train.steps=8 || fail "straight run exited $? ($(tail -3 "$work/straight.log"))"
train "$work/resumed" 2 --set train.steps=4 --set checkpoint.resume=auto || fail "first half exited $?"
train "$work/resumed" 2 --set train.steps=8 --set checkpoint.resume=auto || fail "second half exited $?"
if grep -q "resumed from .*step_00000004" "$work/resumed.log" && diff <(losses "$work/straight") <(losses "$work/resumed") >/dev/null; then
  ok "resume at step 4 reproduces steps 5-8 bit for bit ($(losses "$work/resumed" | tail -1 | cut -c1-60)...)"
else
  fail "resumed run differs from the straight run"; diff <(losses "$work/straight") <(losses "$work/resumed") | head -5
fi

# 2. corruption of the newest checkpoint: the previous one is used (checkpoint every 2 steps)
train "$work/corrupt" 1 --set train.steps=4 --set checkpoint.interval=2 --set checkpoint.keep_last=3 || fail "corrupt setup exited $?"
shard=$work/corrupt/checkpoints/step_00000004/rank_00000.bin
printf '\x00\x01\x02\x03' | dd of="$shard" bs=1 seek=100 conv=notrunc status=none
train "$work/corrupt" 1 --set train.steps=5 --set checkpoint.resume=auto || fail "resume after corruption exited $?"
if grep -q "step_00000004" "$work/corrupt.log" && grep -q "resumed from .*step_00000002" "$work/corrupt.log"; then
  ok "corrupt step_00000004 reported, resumed from step_00000002"
else
  fail "corruption not handled"; grep -iE "checkpoint|resum" "$work/corrupt.log" | head -5
fi

# 3. SIGTERM: stop after the current step with a checkpoint, exit 0 on every rank
( train "$work/signal" 2 --set train.steps=400 --set train.eval_interval=0 ) & job=$!
for _ in $(seq 1 200); do grep -q '"step":2' "$work/signal/metrics.jsonl" 2>/dev/null && break; sleep 0.2; done
pkill -TERM -f "^$tandem train .*$work/signal"; wait $job; rc=$?
if [ $rc -eq 0 ] && grep -q "stopped by signal after step" "$work/signal.log" && ls "$work/signal/checkpoints/" | grep -q step_; then
  ok "SIGTERM: exit 0 with checkpoint $(ls "$work/signal/checkpoints" | grep step_ | tail -1)"
else
  fail "SIGTERM handling: exit $rc"; tail -5 "$work/signal.log"
fi

# 4. missing data: exit 2 on every rank before training
timeout 60 "${mpiexec[@]}" -np 2 "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${one_stage[@]}" --set data.path="$work/none" \
  --set run.output_dir="$work/missing" >"$work/missing.log" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "data.path" "$work/missing.log" && ! grep -q '"step"' "$work/missing/metrics.jsonl" 2>/dev/null; then
  ok "missing dataset: exit 2 naming data.path"
else
  fail "missing dataset: exit $rc"; tail -3 "$work/missing.log"
fi
# 4b. a pipeline job started without mpirun: exit 2 saying how to start it
"$tandem" train "$source_dir/configs/tiny_moe.yaml" >"$work/alone.log" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "lays out 4 ranks .* start it with \`mpirun -np 4 " "$work/alone.log"; then
  ok "pp 4 job as one process: exit 2 with the mpirun command"
else
  fail "pp 4 job as one process: exit $rc"; tail -2 "$work/alone.log"
fi

# 5. runs never overwrite each other (straight/ holds the 8 steps of test 1)
train "$work/straight" 1 --set train.steps=2; rc=$?
if [ $rc -eq 2 ] && grep -q "run.output_dir $work/straight holds another run (metrics.jsonl with 8 steps" "$work/straight.log" \
   && grep -q -- "--overwrite" "$work/straight.log" && [ "$(wc -l <"$work/straight/metrics.jsonl")" -eq 8 ]; then
  ok "re-run into a used directory: exit 2 naming it, the earlier run untouched"
else
  fail "re-run into a used directory: exit $rc"; tail -3 "$work/straight.log"
fi
timeout 120 "${mpiexec[@]}" -np 1 "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${small[@]}" --overwrite \
  --set run.output_dir="$work/straight" --set train.steps=2 >"$work/straight.log" 2>&1; rc=$?
steps=$(grep -o '"step":[0-9]*' "$work/straight/metrics.jsonl" | tr '\n' ' ')
if [ $rc -eq 0 ] && [ "$steps" = '"step":1 "step":2 ' ] && [ "$(ls "$work/straight/checkpoints" | grep -c step_)" -eq 1 ]; then
  ok "--overwrite: the earlier run replaced, metrics.jsonl holds steps 1-2 once"
else
  fail "--overwrite: exit $rc, steps '$steps'"; tail -3 "$work/straight.log"
fi

# 6. resume changes (resumed/ holds step 8 of a run with 10 warm-up steps)
if grep -q "resuming step 4 with train.steps 4 -> 8 (steps 1-4 keep their learning rates)" "$work/resumed.log"; then
  ok "resume with more steps during warm-up: reported, allowed"
else
  fail "resume 4 -> 8 steps not reported"; grep -i "resum" "$work/resumed.log" | head -3
fi
train "$work/resumed" 1 --set train.steps=9 --set checkpoint.resume=auto --set optim.warmup_steps=2; rc=$?
if [ $rc -eq 2 ] && grep -q "optim.warmup_steps 10 -> 2, train.steps 8 -> 9 (the learning rate of step 1 was" "$work/resumed.log" \
   && grep -q "checkpoint.allow_changes=true" "$work/resumed.log"; then
  ok "resume that reshapes the finished steps' learning rates: exit 2 naming the change"
else
  fail "resume with another warm-up: exit $rc"; tail -3 "$work/resumed.log"
fi
train "$work/resumed" 1 --set train.steps=9 --set checkpoint.resume=auto --set optim.warmup_steps=2 \
  --set checkpoint.allow_changes=true; rc=$?
if [ $rc -eq 0 ] && grep -q "with changes to its optimisation (checkpoint.allow_changes)" "$work/resumed.log" \
   && [ "$(grep -c '"step":9' "$work/resumed/metrics.jsonl")" -eq 1 ]; then
  ok "confirmed resume with changes: runs and says so"
else
  fail "confirmed resume: exit $rc"; tail -3 "$work/resumed.log"
fi
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
