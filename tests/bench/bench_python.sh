# shellcheck shell=bash
# Sourced by the benchmark scripts: bench_python ROOT prints the Python to use, in this order: $PYTHON, the
# GPU machine's /opt/torch/.venv, the repository's .venv, python3. bench_corpus builds a corpus;
# bench_launcher sets up mpirun.
bench_python() {
  local candidate
  for candidate in "${PYTHON:-}" /opt/torch/.venv/bin/python "$1/.venv/bin/python" python3; do
    if [ -n "$candidate" ] && command -v "$candidate" > /dev/null 2>&1; then echo "$candidate"; return 0; fi
  done
  echo "python3"
}

# bench_corpus ROOT TANDEM PREFIX: a corpus for `tandem train` at PREFIX.{bin,idx} unless it exists (a
# benchmark measures compute and communication, not the text): the repository's own sources and
# docs, byte-tokenized (the GPU machine has no network). Prints nothing; tandem's log goes to
# PREFIX.log.
bench_corpus() {
  local root=$1 tandem=$2 prefix=$3 texts
  [ -f "$prefix.idx" ] && return 0
  mapfile -t texts < <(cd "$root" && git ls-files '*.md' '*.cpp' '*.h' '*.py' 2>/dev/null | sed "s|^|$root/|")
  [ ${#texts[@]} -gt 0 ] || mapfile -t texts < <(find "$root/docs" "$root/model" -name '*.md' -o -name '*.cpp')
  "$tandem" preprocess --input "${texts[@]}" --output "$prefix" --split-on file > "$prefix.log" 2>&1
}

# bench_launcher MPIRUN: sets the array `launcher` to MPIRUN's words, plus for Open MPI: ranks not
# pinned (--bind-to none: each rank runs its own threads), more ranks than cores allowed
# (--oversubscribe: plumbing checks on small machines, where timings mean nothing) and, as root
# (the GPU machines), --allow-run-as-root, which Open MPI otherwise demands.
bench_launcher() {
  read -ra launcher <<< "$1"
  if "${launcher[0]}" --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
    launcher+=(--oversubscribe --bind-to none)
    [ "$(id -u)" = 0 ] && launcher+=(--allow-run-as-root)
  fi
  return 0
}
