# Shared by the `tandem train` shell tests (sourced after setting $source_dir): skips the test
# (exit 77) when the default corpus is missing, makes a scratch directory $work (removed on exit),
# and defines the micro model of the layout tests, the verdict counters and metrics.jsonl
# comparisons.
data=$source_dir/data/tiny_corpus
if [ ! -f "$data.bin" ]; then
  echo "SKIPPED: $data.bin is missing (scripts/prepare_data.sh builds it; ./bootstrap.sh runs it)"
  exit 77
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The default job is a DualPipe pipeline over 4 ranks; tests of other layouts start from one stage.
one_stage=(--set parallel.pp=1 --set parallel.pipeline.schedule=1f1b)
# Ranks outnumber cores here: OpenMP threads that spin while waiting would starve the other ranks.
export OMP_WAIT_POLICY=PASSIVE

# The micro MoE of the layout tests: the default job's architecture (MLA, 1 shared + 8 routed
# experts, MTP; fp32 on CPU) small enough that some twenty multi-rank runs take a few minutes on 2
# cores. Every size divides by tp 4 (heads, vocabulary, MLP widths, sequence) and the 8 experts by
# ep 4. Batch: 8 sequences of 32 tokens per step, micro-batches of 1 (8 per step on one rank, 2
# per rank under dp4). Buckets of 0.05 MiB: several per replication group, so gradient
# reductions start during backward.
# AdamW's eps is 1e-5 (Llama 2's value) rather than the default job's 1e-8: gradient elements
# within ~1e-8 of zero (every tensor has some) are rounding noise in fp32, and with eps = 1e-8
# AdamW turns that noise into steps of up to lr, so the weights of ANY two runs whose reductions
# round differently (plain dp2 included) drift apart by ~1e-4 of their scale within 20 steps.
# That tests AdamW's conditioning, not the layout; eps = 1e-5 keeps the comparison about layouts.
micro_model=(--set data.path="$data" --set model.hidden_size=32 --set model.num_hidden_layers=2
             --set model.intermediate_size=64 --set model.moe_intermediate_size=16 --set model.num_attention_heads=4
             --set model.kv_lora_rank=16 --set model.qk_nope_head_dim=8 --set model.qk_rope_head_dim=8
             --set model.v_head_dim=8 --set data.seq_length=32 --set data.global_batch_size=8
             --set data.micro_batch_size=1 --set train.steps=20 --set train.precision=fp32 --set run.device=cpu
             --set train.eval_interval=20 --set train.eval_steps=1 --set optim.warmup_steps=5
             --set logging.log_interval=20 --set logging.tensorboard=false --set checkpoint.interval=0
             --set optim.eps=1e-5 --set parallel.grad_bucket_mb=0.05 "${one_stage[@]}")

# train_micro NAME RANKS ARGS...: the micro model under `mpiexec -np RANKS` (the caller sets
# $tandem and the mpiexec array), output in $work/NAME, log appended to $work/NAME.log.
train_micro() {
  local name=$1 ranks=$2; shift 2
  timeout 300 "${mpiexec[@]}" -np "$ranks" "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${micro_model[@]}" \
    --set run.output_dir="$work/$name" "$@" >>"$work/$name.log" 2>&1
}

failures=0 passed=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# metric_diff CANDIDATE_JSONL REFERENCE_JSONL "FIELD ...": the worst relative difference of the
# fields over the candidate's steps, each compared with the reference's line of the same step;
# prints "VALUE STEP FIELD", or "inf STEP WHAT" when a step or a field is missing on one side.
metric_diff() {
  awk -v fields="$3" '
    function value(line, key) {
      if (match(line, "\"" key "\":[-+0-9.eE]+")) return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
      return "none"
    }
    NR == FNR { ref[value($0, "step")] = $0; next }
    {
      step = value($0, "step")
      if (!(step in ref)) { print "inf " step " step(missing)"; bad = 1; exit }
      n = split(fields, keys, " ")
      for (k = 1; k <= n; ++k) {
        a = value($0, keys[k]); b = value(ref[step], keys[k])
        if (a == "none" && b == "none") continue
        if (a == "none" || b == "none") { print "inf " step " " keys[k] "(missing)"; bad = 1; exit }
        d = a - b; if (d < 0) d = -d
        s = b; if (s < 0) s = -s; if (s < 1e-30) s = 1e-30
        if (d / s >= worst) { worst = d / s; at = step " " keys[k] }
      }
      ++compared
    }
    END { if (!bad) { if (compared) printf "%.3e %s\n", worst, at; else print "inf 0 nothing" } }
  ' "$2" "$1"
}

# within VALUE BOUND: true when VALUE is a number no larger than BOUND.
within() { awk -v d="$1" -v t="$2" 'BEGIN { exit !(d != "inf" && d + 0 <= t + 0) }'; }
