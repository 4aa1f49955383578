#!/usr/bin/env bash
# Runs a multi-rank job that must fail, and passes only if it ended with a non-zero exit within
# LIMIT seconds (no hang), its output matched every --expect pattern and no --reject pattern.
# Usage: expect_job_failure.sh LIMIT_SECONDS [--exit-code N] [--expect ERE]... [--reject ERE]... -- COMMAND...
set -uo pipefail
limit_s=$1
shift
exit_code=""
expects=()
rejects=()
while [ $# -gt 0 ]; do
  case "$1" in
    --exit-code) exit_code=$2; shift 2 ;;
    --expect) expects+=("$2"); shift 2 ;;
    --reject) rejects+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "expect_job_failure.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
# Hard stop well past the limit, so that a hang is reported here rather than by ctest's timeout.
hard_stop_s=$((limit_s * 2))

start_ns=$(date +%s%N)
output=$(timeout --kill-after=5 "$hard_stop_s" "$@" 2>&1)
rc=$?
elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
printf '%s\n' "$output"
echo "---- exit code $rc after ${elapsed_ms} ms (limit ${limit_s} s)"

fail() { echo "FAIL: $*"; exit 1; }
[ "$rc" -ne 0 ] || fail "the job exited 0; it was meant to fail"
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "the job hung: killed after ${hard_stop_s} s"
[ -z "$exit_code" ] || [ "$rc" -eq "$exit_code" ] || fail "the job exited $rc, expected $exit_code"
[ "$elapsed_ms" -le $((limit_s * 1000)) ] || fail "the job took ${elapsed_ms} ms to end, more than ${limit_s} s"
for pattern in "${expects[@]}"; do
  grep -Eq -- "$pattern" <<<"$output" || fail "no output line matches: $pattern"
done
for pattern in "${rejects[@]}"; do
  if grep -Eq -- "$pattern" <<<"$output"; then fail "an output line matches: $pattern"; fi
done
echo "PASS: the job failed as expected (exit $rc) ${elapsed_ms} ms after launch"
