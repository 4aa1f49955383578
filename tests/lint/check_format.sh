#!/usr/bin/env bash
# The C++/CUDA sources follow .clang-format (clang-format --dry-run --Werror on every source file
# of the layer folders and tests/). The format of a tree depends on clang-format's major version,
# so the check runs only with the version the tree is formatted with (TANDEM_CLANG_FORMAT names
# another binary); without it the test is skipped (exit 77), saying why.
# Usage: check_format.sh SOURCE_ROOT        Fix: clang-format -i FILE... (with that version)
set -uo pipefail
root=$1
readonly wanted_major=14
binary=${TANDEM_CLANG_FORMAT:-}
if [ -z "$binary" ]; then
  for candidate in clang-format-$wanted_major clang-format; do
    if command -v "$candidate" >/dev/null 2>&1; then binary=$candidate; break; fi
  done
fi
if [ -z "$binary" ]; then
  echo "SKIPPED: clang-format $wanted_major is not installed (Debian: apt-get install clang-format)"; exit 77
fi
version=$("$binary" --version | sed -nE 's/.*version ([0-9]+)\..*/\1/p')
if [ "$version" != "$wanted_major" ]; then
  echo "SKIPPED: $binary is version $version; the tree is formatted with clang-format $wanted_major"; exit 77
fi
cd "$root" || exit 2
mapfile -t files < <(find runtime parallel schedule model launch tests -type f \
  \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) | sort)
if ! "$binary" --dry-run --Werror --style=file "${files[@]}" 2>"${TMPDIR:-/tmp}/tandem_format.$$"; then
  grep -E '^[^ ].*: (error|warning):' "${TMPDIR:-/tmp}/tandem_format.$$" | cut -d: -f1 | sort -u | sed 's/^/needs formatting: /'
  head -40 "${TMPDIR:-/tmp}/tandem_format.$$"
  rm -f "${TMPDIR:-/tmp}/tandem_format.$$"
  echo "FAIL: run $binary -i on the files above"
  exit 1
fi
rm -f "${TMPDIR:-/tmp}/tandem_format.$$"
echo "ok: ${#files[@]} files follow .clang-format ($binary, version $version)"
