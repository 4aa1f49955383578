# Shared by the `tandem train` shell tests (sourced after setting $source_dir): skips the test
# (exit 77) when the default corpus is missing, makes a scratch directory $work (removed on exit),
# and defines the verdict counters and metrics.jsonl comparisons.
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
