#!/usr/bin/env bash
# Is the expert collapse of configs/moe_16e_gpu.yaml (imbalance 4.00 = every token on the same
# 4 of 16 experts) a defect or the run's honest dynamics? Two checks on the GPU machine:
#  1. the same batch, the same initial weights: the routing of the first forward on the GPU
#     (bf16 autocast, fused routing kernel) against the CPU (fp32, LibTorch), tokens per expert of
#     every MoE layer side by side (tandem_train_bench --steps 1 --warmup 0 --print-load);
#  2. `tandem train` on the job's real text with the optimizer defaults it had when the collapse
#     was seen (lr 3e-3 after 10 warm-up steps, tuned for the tiny CPU job) and as configured now
#     (lr 3e-4 after 50): the loss and imbalance of every step.
# Usage: tests/bench/routing_check.sh [OUT_DIR] (after the build; needs data/tiny_corpus).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/build/routing-check}
mkdir -p "$out"
job=$root/configs/moe_16e_gpu.yaml
small=(--set data.micro_batch_size=1 --set data.seq_length=512 --set data.global_batch_size=1)
"$root/build/bin/tandem_train_bench" "$job" --steps 1 --warmup 0 --print-load "${small[@]}" --label gpu \
  > "$out/first_forward_gpu.json"
"$root/build/bin/tandem_train_bench" "$job" --steps 1 --warmup 0 --print-load "${small[@]}" --label cpu \
  --set run.device=cpu --set train.precision=fp32 > "$out/first_forward_cpu.json"
python3 - "$out/first_forward_gpu.json" "$out/first_forward_cpu.json" <<'PY'
import json, sys
gpu, cpu = (json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[1:3])
print(f"first forward, same batch and weights: imbalance gpu {gpu['imbalance']:.3f}, cpu {cpu['imbalance']:.3f}")
for layer, (g, c) in enumerate(zip(gpu["expert_load"], cpu["expert_load"])):
    moved = sum(abs(a - b) for a, b in zip(g, c)) // 2
    print(f"  MoE layer {layer:2d}: gpu {g}\n               cpu {c}   ({moved} of {sum(g)} assignments differ)")
PY
steps=${ROUTING_CHECK_STEPS:-40}
for run in "lr3e-3_warmup10|--set optim.lr=3e-3 --set optim.min_lr=3e-4 --set optim.warmup_steps=10" "as_configured|"; do
  IFS='|' read -r name overrides <<<"$run"
  rm -rf "${out:?}/$name"  # a fresh run each time (tandem train refuses a directory holding another run)
  # shellcheck disable=SC2086  # the overrides are words
  "$root/build/bin/tandem" train "$job" --set train.steps="$steps" --set logging.log_interval=1 \
    --set logging.tensorboard=false --set checkpoint.interval=0 --set checkpoint.save_on_exit=false \
    --set run.output_dir="$out/$name" $overrides > "$out/$name.log" 2>&1 || { tail -5 "$out/$name.log"; exit 1; }
  python3 - "$out/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{sys.argv[2]}: step: loss / imbalance")
print("  " + "  ".join(f"{r['step']}: {r['loss']:.2f}/{r['expert_imbalance']:.2f}" for r in rows
                        if r["step"] <= 10 or r["step"] % 10 == 0))
PY
done
