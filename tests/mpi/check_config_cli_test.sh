#!/usr/bin/env bash
# The check-config acceptance on 4 ranks: a good layout exits 0 and prints the rank map; a
# misspelt key, a negative size, a repeated key and a layout that does not divide the world each
# exit 2 on every rank with a message naming the problem. Then simulate, plan and check-config
# outside mpirun. Usage: check_config_cli_test.sh TANDEM_BINARY SOURCE_DIR MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2; shift 2
mpiexec=("$@")
job=$source_dir/configs/tiny_moe.yaml
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
failures=0

# expect CODE FRAGMENT ARGS...: runs the job on 4 ranks twice. First as users do: mpirun must
# exit with CODE and the output name FRAGMENT. Then with mpirun told not to kill the remaining
# ranks once one exits non-zero, so that every rank's own exit code is seen: all four must be CODE.
expect() {
  local code=$1 fragment=$2; shift 2
  local out=$work/out.txt per_rank=$work/per_rank.txt
  timeout 60 "${mpiexec[@]}" -np 4 "$tandem" "$@" >"$out" 2>&1
  local rc=$?
  timeout 60 "${mpiexec[@]}" -np 4 --mca orte_abort_on_non_zero_status 0 \
    bash -c '"$@"; rc=$?; echo "rank-exit $rc" >&2; exit 0' _ "$tandem" "$@" >"$per_rank" 2>&1
  local ranks_with_code
  ranks_with_code=$(grep -c "^rank-exit $code\$" "$per_rank")
  if [ "$rc" -ne "$code" ] || [ "$ranks_with_code" -ne 4 ] || ! grep -qF -- "$fragment" "$out"; then
    echo "FAIL: tandem $* -> mpirun exit $rc, $ranks_with_code/4 ranks exited $code (want $code), fragment '$fragment'"
    sed 's/^/    /' "$out" "$per_rank" | head -30
    failures=$((failures + 1))
  else
    echo "ok: mpirun and all 4 ranks exit $code: tandem $*"
  fi
}

expect 0 "rank   pp   dp   tp" check-config "$job" --set parallel.pp=2 --set parallel.dp=2 --quiet
printf 'model:\n  hiden_size: 64\n' >"$work/misspelt.yaml"
expect 2 "unknown key (did you mean 'hidden_size'?) (4 of 4 ranks report the same)" check-config "$work/misspelt.yaml"
printf 'model:\n  hidden_size: -64\n' >"$work/negative.yaml"
expect 2 "model.hidden_size: must be >= 1 (got -64)" check-config "$work/negative.yaml"
expect 2 "world of 4 ranks is not divisible by pp*tp" check-config "$job" --set parallel.pp=3
expect 2 "unknown key" check-config "$job" --set parallel.ppp=2
# Pipeline schedules' own rules, naming the key (the default job is DualPipe over 4 ranks).
expect 2 "parallel.pipeline.schedule: dualpipe needs micro_batches >= 2*pp (got 4 < 8)" \
  check-config "$job" --set data.global_batch_size=8
expect 2 "parallel.pipeline.virtual_stages: the interleaved schedule needs virtual_stages >= 2" \
  check-config "$job" --set parallel.pipeline.schedule=interleaved
# A repeated key is an error naming both lines (YAML parsers keep one of them silently).
printf 'parallel:\n  pp: 4\n  tp: 1\n  pp: 2\n' >"$work/duplicate.yaml"
expect 2 "duplicate.yaml:4: parallel.pp: duplicate key (already set at line 2)" check-config "$work/duplicate.yaml"

# Outside mpirun: the job's own world (pp 4), and for simulate and plan CPU speeds for a CPU job,
# the schedules that cannot run it named with the reason, the columns explained in --help.
# check SUBJECT FRAGMENT...: every fragment is in $work/sim.txt.
check() {
  local subject=$1 missing=""; shift
  for fragment in "$@"; do grep -qF -- "$fragment" "$work/sim.txt" || missing+=" '$fragment'"; done
  if [ -z "$missing" ]; then echo "ok: $subject"; else
    echo "FAIL: $subject: missing$missing"; sed 's/^/    /' "$work/sim.txt" | head -20; failures=$((failures + 1)); fi
}
"$tandem" simulate "$job" >"$work/sim.txt" 2>&1
check "simulate: the job's 4 ranks at CPU speed, skipped schedules named" "tiny_moe on 4 ranks: pp 4" \
  "CPU job: " "hardware.cpu_gflops_per_core" "  dualpipe " "# skipped: " "interleaved ("
"$tandem" plan "$job" --top 3 >"$work/sim.txt" 2>&1
check "plan: the job's 4 ranks at CPU speed" "tiny_moe on 4 ranks" "CPU job: " "fastest first"
"$tandem" check-config "$job" --quiet >"$work/sim.txt" 2>&1
check "check-config outside mpirun: the job's own 4 ranks" "4 ranks = pp 4 x dp 1 x tp 1"
"$tandem" simulate --help >"$work/sim.txt" 2>&1
check "simulate --help explains the columns" "Columns:" "bubble       share of the ranks' time" "peak live"
[ "$failures" -eq 0 ] && echo "12 passed, 0 failed" || { echo "$((12 - failures)) passed, $failures failed"; exit 1; }
