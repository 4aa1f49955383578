#!/usr/bin/env bash
# `tandem train` on a GPU, end to end, on the default job's corpus with a small model:
#  1. run.device auto picks the GPU and bf16 autocast (fp32 master weights); the loss falls;
#  2. fp32 on the GPU follows the CPU fp32 trajectory to 1e-4 over 20 steps (same math on
#     another device);
#  3. two ranks (dp2) on the GPU(s) communicate device tensors (host-staged MPI without NCCL)
#     and reproduce the one-rank bf16 losses closely;
#  4. a DualPipe pipeline over 2 ranks on the GPU(s) (activations and gradients between stages
#     as device tensors, bf16 autocast on both threads of the overlapped pairs) follows the
#     one-rank fp32 run, and in bf16 the one-rank run with the same micro-batches;
#  5. dp2 under ZeRO 1, 2 and 3 in fp32 follows the one-rank fp32 run;
#  6. train.cuda_graph (forward and backward replayed as one CUDA graph from the third micro-
#     batch on, two micro-batches per step accumulating into the same gradient buffers) follows
#     the eager runs: bf16 on one rank and on dp2 (buckets reduced after the graph), a dense
#     model in fp32; fp32 experts are refused.
# Skips (exit 77) without a GPU or without the corpus.
# Usage: train_gpu_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
data=$source_dir/data/tiny_corpus
if ! nvidia-smi -L >/dev/null 2>&1; then echo "SKIPPED: no GPU (nvidia-smi -L fails)"; exit 77; fi
if [ ! -f "$data.bin" ]; then echo "SKIPPED: $data.bin is missing (scripts/prepare_data.sh builds it)"; exit 77; fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The default job pins run.device=cpu and fp32; these runs choose per test (auto = GPU + bf16).
small=(--set data.path="$data" --set run.device=auto --set train.precision=auto --set model.hidden_size=128 --set model.num_hidden_layers=2 --set data.seq_length=128
       --set data.global_batch_size=16 --set data.micro_batch_size=8 --set train.eval_interval=0
       --set logging.log_interval=10 --set logging.tensorboard=false --set checkpoint.save_on_exit=false
       --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b)  # the default job's DualPipe pp4 -> one stage
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
train() {  # train OUTPUT_DIR RANKS ARGS...
  local out=$1 ranks=$2; shift 2
  timeout 300 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${small[@]}" \
    --set run.output_dir="$out" "$@" >"$out.log" 2>&1
}
field() { sed -nE "s/.*\"$2\":([-0-9.e+]+).*/\1/p" "$1/metrics.jsonl"; }  # field RUN NAME: one value per step

# 1. auto: GPU + bf16, loss falls
train "$work/bf16" 1 --set train.steps=40 || fail "bf16 run exited $? ($(tail -3 "$work/bf16.log"))"
grep -q "device cuda:0 | bf16 autocast" "$work/bf16.log" || fail "auto did not pick cuda + bf16: $(grep -m1 'device ' "$work/bf16.log")"
first=$(field "$work/bf16" lm_loss | head -1) last=$(field "$work/bf16" lm_loss | tail -1)
if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.5) }'; then
  ok "bf16 on GPU: lm loss $first -> $last in 40 steps ($(field "$work/bf16" tokens_per_s | tail -1) tokens/s)"
else fail "bf16 loss did not fall enough: $first -> $last"; fi

# 2. fp32 on GPU vs fp32 on CPU, 20 steps
train "$work/gpu32" 1 --set train.steps=20 --set train.precision=fp32 || fail "gpu fp32 exited $?"
train "$work/cpu32" 1 --set train.steps=20 --set run.device=cpu || fail "cpu fp32 exited $?"
grep -q "device cuda:0 | fp32" "$work/gpu32.log" || fail "fp32 run not on the GPU: $(grep -m1 'device ' "$work/gpu32.log")"
grep -q "device cpu | fp32" "$work/cpu32.log" || fail "cpu run not on the CPU in fp32: $(grep -m1 'device ' "$work/cpu32.log")"
worst=$(paste <(field "$work/gpu32" loss) <(field "$work/cpu32" loss) |
        awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
if [ "$(field "$work/gpu32" loss | wc -l)" -eq 20 ] && awk -v w="$worst" 'BEGIN { exit !(w < 1e-4) }'; then
  ok "fp32 GPU vs CPU: worst relative loss difference over 20 steps $worst"
else fail "fp32 GPU and CPU trajectories differ: worst $worst"; fi

# 3. dp2 on the GPU(s): device tensors through the communicators
train "$work/dp2" 2 --set train.steps=40 || fail "dp2 run exited $? ($(tail -3 "$work/dp2.log"))"
worst=$(paste <(field "$work/dp2" loss) <(field "$work/bf16" loss) |
        awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
if [ "$(field "$work/dp2" loss | wc -l)" -eq 40 ] && awk -v w="$worst" 'BEGIN { exit !(w < 3e-2) }'; then
  ok "dp2 bf16 on GPU ($(grep -m1 -o 'communication over [^ ]*' "$work/dp2.log")): worst relative loss difference vs one rank $worst"
else fail "dp2 differs from one rank: worst $worst"; fi

# 4. DualPipe pp2 (micro-batches of 4: DualPipe needs M >= 2 * pp), fp32 then bf16
pipeline=(--set parallel.pp=2 --set parallel.pipeline.schedule=dualpipe --set data.micro_batch_size=4)
train "$work/pp32" 2 "${pipeline[@]}" --set train.steps=8 --set train.precision=fp32 || fail "pp2 fp32 exited $?"
worst=$(paste <(field "$work/pp32" loss) <(head -8 <(field "$work/gpu32" loss)) |
        awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
if [ "$(field "$work/pp32" loss | wc -l)" -eq 8 ] && awk -v w="$worst" 'BEGIN { exit !(w < 1e-3) }'; then
  ok "dualpipe pp2 fp32 on GPU: worst relative loss difference vs one rank $worst"
else fail "dualpipe pp2 fp32 differs from one rank: worst $worst ($(tail -2 "$work/pp32.log"))"; fi
# bf16 against one rank with the same micro-batches of 4: the same products in bf16, so the
# difference is the pipeline's alone (micro-batches of 8 round differently and drift apart).
train "$work/pp16" 2 "${pipeline[@]}" --set train.steps=40 || fail "pp2 bf16 exited $?"
train "$work/bf16mb4" 1 --set data.micro_batch_size=4 --set train.steps=40 || fail "bf16 micro-batch 4 exited $?"
worst=$(paste <(field "$work/pp16" loss) <(field "$work/bf16mb4" loss) |
        awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
if [ "$(field "$work/pp16" loss | wc -l)" -eq 40 ] && awk -v w="$worst" 'BEGIN { exit !(w < 3e-2) }'; then
  ok "dualpipe pp2 bf16 on GPU: worst relative loss difference vs one rank $worst"
else fail "dualpipe pp2 bf16 differs from one rank: worst $worst ($(tail -2 "$work/pp16.log"))"; fi

# 5. ZeRO 1/2/3 under dp2 on the GPU(s), fp32: the data-parallel optimizer's sharded state,
# reduce-scattered gradients and (ZeRO-3) parameters released and re-gathered in device memory
# follow the one-rank fp32 run
for zero in 1 2 3; do
  train "$work/zero$zero" 2 --set train.steps=8 --set train.precision=fp32 --set parallel.zero="$zero" ||
    fail "dp2 zero $zero exited $? ($(tail -2 "$work/zero$zero.log"))"
  worst=$(paste <(field "$work/zero$zero" loss) <(head -8 <(field "$work/gpu32" loss)) |
          awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
  if [ "$(field "$work/zero$zero" loss | wc -l)" -eq 8 ] && awk -v w="$worst" 'BEGIN { exit !(w < 1e-3) }'; then
    ok "dp2 zero $zero fp32 on GPU: worst relative loss difference vs one rank $worst ($(grep -m1 -o 'rank 0: parameters [^)]*' "$work/zero$zero.log"))"
  else fail "dp2 zero $zero fp32 differs from one rank: worst $worst"; fi
done

# 6. train.cuda_graph against the eager runs above (the same kernels; only the MoE combine's
# atomic adds may order differently)
compare() {  # compare RUN REFERENCE STEPS LIMIT WHAT
  local worst
  worst=$(paste <(field "$1" loss) <(head -"$3" <(field "$2" loss)) |
          awk '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.3g", w + 0 }')
  if [ "$(field "$1" loss | wc -l)" -eq "$3" ] && awk -v w="$worst" -v l="$4" 'BEGIN { exit !(w < l) }'; then
    ok "$5: worst relative loss difference vs the eager run $worst"
  else fail "$5 differs from the eager run: worst $worst ($(tail -2 "$1.log"))"; fi
}
graph=(--set train.cuda_graph=true)
train "$work/graph16" 1 "${graph[@]}" --set train.steps=40 || fail "cuda graph bf16 exited $?"
grep -q "cuda graph: each micro-batch" "$work/graph16.log" || fail "cuda graph bf16: no graph was recorded"
compare "$work/graph16" "$work/bf16" 40 3e-2 "cuda graph bf16 on GPU"
train "$work/graphdp2" 2 "${graph[@]}" --set train.steps=40 || fail "cuda graph dp2 exited $?"
compare "$work/graphdp2" "$work/dp2" 40 3e-2 "cuda graph dp2 bf16 on GPU"
# fp32: a dense model (the fp32 grouped expert GEMMs need the expert boundaries on the host,
# which train.cuda_graph refuses before training)
dense=(--set train.steps=20 --set train.precision=fp32 --set model.n_routed_experts=0)
train "$work/dense32" 1 "${dense[@]}" || fail "dense fp32 exited $?"
train "$work/graphdense32" 1 "${dense[@]}" "${graph[@]}" || fail "cuda graph dense fp32 exited $?"
compare "$work/graphdense32" "$work/dense32" 20 1e-6 "cuda graph dense fp32 on GPU"
train "$work/graphmoe32" 1 "${graph[@]}" --set train.steps=2 --set train.precision=fp32
code=$?
if [ $code -eq 2 ] && grep -q "train.cuda_graph: the routed experts' fp32 grouped GEMMs" "$work/graphmoe32.log"; then
  ok "cuda graph with fp32 experts refused before training (exit 2)"
else fail "cuda graph with fp32 experts: exit $code, $(grep -m1 -i error "$work/graphmoe32.log")"; fi

[ $failures -eq 0 ] || { echo "$failures check(s) failed; logs:"; for f in "$work"/*.log; do echo "== $f"; tail -n 5 "$f"; done; exit 1; }
