#!/usr/bin/env bash
# A rank that dies mid-step ends the whole pipeline job: the default job (DualPipe over 4
# pipeline ranks) is started, and once it is training, one rank gets SIGKILL in the middle of a
# step. Every rank must then be gone, and mpirun must exit non-zero, within LIMIT seconds (a
# survivor blocked in a pipeline receive would otherwise hang until its communication timeout).
# Usage: pipeline_kill_test.sh TANDEM_BIN SOURCE_ROOT MPIEXEC [MPIEXEC_FLAGS...]
# Exit 77 (skipped) without the default corpus.
set -uo pipefail
bin=$1
root=$2
shift 2
mpiexec=("$@")
readonly limit_s=30

data="$root/data/tiny_corpus"
if [ ! -f "$data.bin" ] || [ ! -f "$data.idx" ]; then
  echo "SKIP: the default corpus ($data.{bin,idx}) is missing; run scripts/prepare_data.sh"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/train.log"

fail() {
  echo "FAIL: $*"
  echo "---- job output"
  cat "$log"
  exit 1
}

"${mpiexec[@]}" -np 4 "$bin" train "$root/configs/tiny_moe.yaml" --set data.path="$data" \
  --set run.output_dir="$work/run" --set train.steps=100000 --set train.eval_interval=0 \
  --set logging.log_interval=1 --set logging.tensorboard=false --set checkpoint.save_on_exit=false \
  --comm-timeout 600 >"$log" 2>&1 &
launcher=$!

# Wait until steps are running (a step line in the log), then find the ranks: mpirun's children.
for _ in $(seq 1 600); do
  grep -q "step .*2/100000" "$log" && break
  kill -0 "$launcher" 2>/dev/null || fail "the job ended before it started training"
  sleep 0.1
done
grep -q "step .*2/100000" "$log" || fail "the job did not reach step 2 within 60 s"
ranks=($(pgrep -P "$launcher"))
[ "${#ranks[@]}" -eq 4 ] || fail "expected 4 rank processes under mpirun, found ${#ranks[@]}: ${ranks[*]}"
# Steps take a few hundred ms; a pause that is not a multiple of that lands inside one.
sleep 0.37
victim=${ranks[2]}
echo "killing rank process $victim (of ${ranks[*]}) with SIGKILL"
start_ns=$(date +%s%N)
kill -KILL "$victim"

# Every rank and mpirun must end within the limit.
deadline=$(($(date +%s) + limit_s))
while kill -0 "$launcher" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
if kill -0 "$launcher" 2>/dev/null; then
  kill -KILL "$launcher" "${ranks[@]}" 2>/dev/null
  fail "mpirun still ran ${limit_s} s after the kill (the job hung)"
fi
wait "$launcher"
rc=$?
# mpirun may return while it is still taking the other ranks down: they must be gone (or dead
# and waiting to be reaped) by the deadline too.
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
for pid in "${ranks[@]}"; do
  while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
done
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
for pid in "${ranks[@]}"; do
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    fail "rank process $pid still ran ${limit_s} s after the kill"
  fi
done
[ "$rc" -ne 0 ] || fail "the job exited 0 after losing a rank"
echo "PASS: every rank ended ${elapsed_ms} ms after the kill; mpirun exited $rc"
