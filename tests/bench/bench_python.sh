# shellcheck shell=bash
# Sourced by the benchmark scripts: bench_python ROOT prints the Python to use, in this order: $PYTHON, the
# GPU machine's /opt/torch/.venv, the repository's .venv, python3.
bench_python() {
  local candidate
  for candidate in "${PYTHON:-}" /opt/torch/.venv/bin/python "$1/.venv/bin/python" python3; do
    if [ -n "$candidate" ] && command -v "$candidate" > /dev/null 2>&1; then echo "$candidate"; return 0; fi
  done
  echo "python3"
}
