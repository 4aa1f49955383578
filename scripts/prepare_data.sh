#!/usr/bin/env bash
# Builds the default job's corpus, data/tiny_corpus.{bin,idx}: the English text of the Debian
# package `fortunes` (quotations, literature, poems, jokes; ~2.5 MB in 43 files under
# /usr/share/games/fortunes, one fortune per document, separated by lines holding just `%`),
# tokenized with tandem's byte tokenizer into a Megatron indexed dataset.
# Idempotent: does nothing when the dataset exists and is newer than every input file.
# Installs `fortunes` with apt when it is missing and apt can be used (root or passwordless sudo).
# Usage: scripts/prepare_data.sh   (env: TANDEM_BIN=build/bin/tandem, FORTUNES_DIR=/usr/share/games/fortunes)
set -euo pipefail

cd "$(dirname "$0")/.."
TANDEM_BIN=${TANDEM_BIN:-build/bin/tandem}
FORTUNES_DIR=${FORTUNES_DIR:-/usr/share/games/fortunes}
OUTPUT=data/tiny_corpus

if [[ ! -d "$FORTUNES_DIR" && -f $OUTPUT.bin && -f $OUTPUT.idx ]]; then
  # A machine without the package (e.g. offline) that was given the prepared dataset.
  echo "prepare_data: $FORTUNES_DIR is missing; using the existing $OUTPUT.{bin,idx}"
  exit 0
fi
if [[ ! -d "$FORTUNES_DIR" ]]; then
  echo "prepare_data: $FORTUNES_DIR is missing; installing the Debian package 'fortunes'" >&2
  if [[ $(id -u) -eq 0 ]]; then
    APT=(apt-get)
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    APT=(sudo -n apt-get)
  else
    echo "prepare_data: cannot install 'fortunes' (not root, no passwordless sudo)." >&2
    echo "  Install it (apt-get install fortunes) or set FORTUNES_DIR to a directory of fortune files." >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "prepare_data: no apt-get on this machine; install the 'fortunes' text files another way" >&2
    echo "  and set FORTUNES_DIR to their directory." >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${APT[@]}" install -y --no-install-recommends fortunes >/dev/null ||
    { "${APT[@]}" update >/dev/null && "${APT[@]}" install -y --no-install-recommends fortunes >/dev/null; }
fi

# The fortune text files: no strfile indexes (.dat), no .u8 aliases, no symlinks; sorted so that
# the dataset's document order is the same on every machine.
mapfile -t INPUTS < <(find "$FORTUNES_DIR" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort)
if [[ ${#INPUTS[@]} -eq 0 ]]; then
  echo "prepare_data: no fortune files in $FORTUNES_DIR" >&2
  exit 1
fi

if [[ -f $OUTPUT.bin && -f $OUTPUT.idx ]]; then
  newer=$(find "${INPUTS[@]}" -newer "$OUTPUT.bin" -o -newer "$OUTPUT.idx" | head -n 1)
  if [[ -z $newer ]]; then
    echo "prepare_data: $OUTPUT.{bin,idx} is up to date"
    exit 0
  fi
fi

if [[ ! -x $TANDEM_BIN ]]; then
  echo "prepare_data: $TANDEM_BIN not found; build it first (cmake --build build)" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUTPUT")"
"$TANDEM_BIN" preprocess --input "${INPUTS[@]}" --output "$OUTPUT" --split-on %
