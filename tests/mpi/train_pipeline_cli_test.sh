#!/usr/bin/env bash
# `tandem train` with pipeline parallelism, end to end on the default corpus with a small 4-layer
# model (20 steps, 8 micro-batches of one sequence per step):
#  1. equivalence: DualPipe over 4 pipeline ranks, 1F1B over 2, interleaved 1F1B (2 virtual
#     stages) over 2, and DualPipe pp2 combined with dp2, ep2 and ZeRO-1 (4 ranks) log the losses,
#     gradient norms and eval losses of the `-np 1` run at every step to a relative 1e-5, and end
#     with the same parameters (checkpoint tensors by global name) to 1e-5. (AdamW's moments are
#     not held to 1e-5: the pipeline sums a gradient's pieces in another order, e.g. the two
#     copies of the embedding, and the second moments of tiny gradients, such as layer 0's norm
#     weight, amplify those last-bit differences to ~2e-5; a wrong moment would show up in the
#     resumed runs of (3), whose losses depend on them.) The executor-level
#     test (pipeline_executor_mpi_test.cpp) covers all six schedules on pp 2 and 4 and DualPipe with
#     dp2/ep2 on 8 ranks; this one proves the trainer around it.
#  2. exact resume under pp4 DualPipe: resumed from the step-10 checkpoint of (1)'s run, steps
#     11-20 are bit-identical to the uninterrupted run, and so is the final checkpoint;
#  3. resharding: the same pp4 DualPipe checkpoint resumed under pp2 1F1B and under one process
#     continues the uninterrupted pp4 run to a relative 1e-5 (each tensor is stored once under its
#     global name, whichever pipeline rank held it);
#  4. logging.trace_steps: every rank writes its op timeline, rank 0 the comparison with the
#     re-simulation (compare.svg, compare.chrome.json, bubble table in the log); `tandem simulate
#     JOB --measured DIR` redoes it from the files (world taken from them) and refuses the traces
#     of another schedule;
#  5. SIGINT on one pipeline rank: every rank stops after the same step, writes a checkpoint and
#     exits 0;
#  6. bf16 autocast (on the CPU) through DualPipe pp2: the first step's gradient norm equals the
#     one-process bf16 run's to 1e-6 and differs from fp32's, so every forward, also those on the
#     worker thread of an overlapped pair, ran under autocast.
# Usage: train_pipeline_cli_test.sh TANDEM_BINARY SOURCE_DIR CHECKPOINT_DIFF_BINARY MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2 checkpoint_diff=$3; shift 3
mpiexec=("$@")
# shellcheck source=tests/mpi/train_test_common.sh
source "$(dirname "$0")/train_test_common.sh"
small=(--set data.path="$data" --set model.hidden_size=32 --set model.num_hidden_layers=4
       --set model.intermediate_size=64 --set model.moe_intermediate_size=16 --set model.kv_lora_rank=16
       --set model.qk_nope_head_dim=8 --set model.qk_rope_head_dim=8 --set model.v_head_dim=8
       --set data.seq_length=32 --set data.global_batch_size=8 --set data.micro_batch_size=1
       --set train.steps=20 --set train.eval_interval=10 --set train.eval_steps=1 --set optim.warmup_steps=5
       --set logging.log_interval=10 --set logging.tensorboard=false --set logging.trace_steps=[]
       --set checkpoint.interval=10 --set optim.eps=1e-5 --set run.device=cpu --set train.precision=fp32)
train() {  # train NAME RANKS ARGS...: output in $work/NAME, log in $work/NAME.log
  local name=$1 ranks=$2; shift 2
  timeout 120 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${small[@]}" \
    --set run.output_dir="$work/$name" "$@" >"$work/$name.log" 2>&1
}
fields="loss lm_loss mtp_loss aux_loss grad_norm eval_loss expert_imbalance"
# compare NAME REFERENCE WHAT: per-step metrics and final checkpoint of NAME against REFERENCE.
compare() {
  local name=$1 ref=$2 what=$3 worst tensors tensors_rc
  worst=$(metric_diff "$work/$name/metrics.jsonl" "$work/$ref/metrics.jsonl" "$fields")
  tensors=$("$checkpoint_diff" "$work/$name/checkpoints/step_00000020" "$work/$ref/checkpoints/step_00000020" \
    --kinds param --tolerance 1e-5 2>&1); tensors_rc=$?
  tensors=$(tail -1 <<<"$tensors")
  if within "${worst%% *}" 1e-5 && [ "$tensors_rc" -eq 0 ]; then
    ok "$what: $(wc -l <"$work/$name/metrics.jsonl") steps, worst relative difference ${worst} | parameters: ${tensors}"
  else
    fail "$what: metrics ${worst}; checkpoint: ${tensors}"
  fi
}
# The metrics of a run without its timing fields, one line per step.
losses() { sed -E 's/"(tokens_per_s|mfu|step_time_s)":[^,}]*,?//g' "$1/metrics.jsonl"; }

# 1. equivalence with one process
train ref 1 --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b || fail "np1 reference exited $?"
train dualpipe_pp4 4 --set parallel.pp=4 --set parallel.pipeline.schedule=dualpipe --set logging.trace_steps=[5] &&
  compare dualpipe_pp4 ref "dualpipe pp4 (np4) vs np1" || fail "dualpipe pp4 exited $? ($(tail -2 "$work/dualpipe_pp4.log"))"
train 1f1b_pp2 2 --set parallel.pp=2 --set parallel.pipeline.schedule=1f1b &&
  compare 1f1b_pp2 ref "1f1b pp2 (np2) vs np1" || fail "1f1b pp2 exited $?"
train interleaved_pp2 2 --set parallel.pp=2 --set parallel.pipeline.schedule=interleaved \
  --set parallel.pipeline.virtual_stages=2 &&
  compare interleaved_pp2 ref "interleaved v2 pp2 (np2) vs np1" || fail "interleaved pp2 exited $?"
train composed 4 --set parallel.pp=2 --set parallel.pipeline.schedule=dualpipe --set parallel.ep=2 \
  --set parallel.zero=1 &&
  compare composed ref "dualpipe pp2 x dp2 x ep2 + zero1 (np4) vs np1" || fail "pp2 dp2 ep2 exited $?"

# 2-3. resume from the pp4 DualPipe run's step-10 checkpoint
checkpoint=$work/dualpipe_pp4/checkpoints/step_00000010
train resumed_pp4 4 --set parallel.pp=4 --set parallel.pipeline.schedule=dualpipe --set checkpoint.resume="$checkpoint" ||
  fail "pp4 resume exited $?"
exact=$("$checkpoint_diff" "$work/resumed_pp4/checkpoints/step_00000020" "$work/dualpipe_pp4/checkpoints/step_00000020" \
  --tolerance 0 2>&1); exact_rc=$?
exact=$(tail -1 <<<"$exact")
if grep -q "resumed from .*step_00000010" "$work/resumed_pp4.log" && [ "$exact_rc" -eq 0 ] &&
   diff <(losses "$work/dualpipe_pp4" | tail -10) <(losses "$work/resumed_pp4") >/dev/null; then
  ok "exact resume under pp4 dualpipe: steps 11-20 bit-identical, final checkpoint ${exact}"
else
  fail "pp4 dualpipe resume is not exact (checkpoint: ${exact})"
  diff <(losses "$work/dualpipe_pp4" | tail -10) <(losses "$work/resumed_pp4") | head -4
fi
train resumed_1f1b_pp2 2 --set parallel.pp=2 --set parallel.pipeline.schedule=1f1b --set checkpoint.resume="$checkpoint" &&
  compare resumed_1f1b_pp2 dualpipe_pp4 "pp4 dualpipe checkpoint resumed under pp2 1f1b vs uninterrupted pp4" ||
  fail "pp2 1f1b resume exited $?"
train resumed_np1 1 --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b --set checkpoint.resume="$checkpoint" &&
  compare resumed_np1 dualpipe_pp4 "pp4 dualpipe checkpoint resumed in one process vs uninterrupted pp4" ||
  fail "np1 resume exited $?"

# 4. traces of step 5 of the pp4 run
traces=$work/dualpipe_pp4/traces/step5
if [ -s "$traces/rank0.json" ] && [ -s "$traces/rank3.json" ] && [ -s "$traces/compare.svg" ] &&
   [ -s "$traces/compare.chrome.json" ] && grep -q "rank     measured" "$work/dualpipe_pp4.log"; then
  ok "trace of step 5: $(ls "$traces" | tr '\n' ' ')"
else
  fail "trace files of step 5 missing: $(ls "$traces" 2>&1 | tr '\n' ' ')"
fi
"$tandem" simulate "$source_dir/configs/tiny_moe.yaml" "${small[@]}" --measured "$traces" --out "$work/again" \
  >"$work/simulate.log" 2>&1; rc=$?
if [ $rc -eq 0 ] && grep -q "^   all " "$work/simulate.log" && [ -s "$work/again.svg" ] && [ -s "$work/again.chrome.json" ]; then
  ok "simulate --measured: $(grep "^   all " "$work/simulate.log" | tr -s ' ')"
else
  fail "simulate --measured exited $rc"; tail -3 "$work/simulate.log"
fi
"$tandem" simulate "$source_dir/configs/tiny_moe.yaml" "${small[@]}" --set parallel.pipeline.schedule=zb1p \
  --measured "$traces" >"$work/simulate_other.log" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "the traces are of dualpipe over pp 4" "$work/simulate_other.log"; then
  ok "simulate --measured with another schedule's job: exit 2"
else
  fail "simulate --measured with a zb1p job: exit $rc"; tail -2 "$work/simulate_other.log"
fi

# 5. SIGINT on pipeline rank 2 of 4: all stop after the same step with a checkpoint, exit 0
( train signal 4 --set parallel.pp=4 --set parallel.pipeline.schedule=dualpipe --set train.steps=100000 \
    --set train.eval_interval=0 --set checkpoint.interval=0 ) & job=$!
for _ in $(seq 1 300); do grep -q '"step":3' "$work/signal/metrics.jsonl" 2>/dev/null && break; sleep 0.2; done
ranks=$(pgrep -f "^$tandem train .*$work/signal" | sort -n)
victim=$(sed -n 3p <<<"$ranks")
[ -n "$victim" ] && kill -INT "$victim"
wait $job; rc=$?
if [ $rc -eq 0 ] && grep -q "stopped by signal after step" "$work/signal.log" && ls "$work/signal/checkpoints/" | grep -q step_; then
  ok "SIGINT on one of 4 pipeline ranks: exit 0 with checkpoint $(ls "$work/signal/checkpoints" | grep step_ | tail -1)"
else
  fail "SIGINT handling: exit $rc (signalled $victim of $(tr '\n' ' ' <<<"$ranks"))"; tail -5 "$work/signal.log"
fi
# 6. bf16 autocast through the pipeline, one step
train bf16_ref 1 --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b --set train.precision=bf16 \
  --set train.steps=1 || fail "np1 bf16 exited $?"
train bf16_pp2 2 --set parallel.pp=2 --set parallel.pipeline.schedule=dualpipe --set train.precision=bf16 \
  --set train.steps=1 || fail "pp2 bf16 exited $?"
bf16=$(metric_diff "$work/bf16_pp2/metrics.jsonl" "$work/bf16_ref/metrics.jsonl" "grad_norm")
vs_fp32=$(metric_diff "$work/bf16_pp2/metrics.jsonl" "$work/ref/metrics.jsonl" "grad_norm")
if within "${bf16%% *}" 1e-6 && ! within "${vs_fp32%% *}" 1e-4; then
  ok "bf16 dualpipe pp2: step-1 gradient norm vs one-process bf16 ${bf16%% *}, vs fp32 ${vs_fp32%% *}"
else
  fail "bf16 through the pipeline: vs bf16 ${bf16}, vs fp32 ${vs_fp32}"
fi
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
