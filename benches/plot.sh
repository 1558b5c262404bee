#!/usr/bin/env bash
# Draws the load benchmark's results (load.csv, written by `cargo bench
# --bench load`) as PNG plots with matplotlib, installed into a virtualenv
# on first use.
# Usage: benches/plot.sh [load.csv] [output-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/envelope/target}
csv=${1:-$target/tmp/load.csv}
out=${2:-docs/bench}
venv=${ENVELOPE_CACHE:-$HOME/.cache/envelope}/plot
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib==3.11.2'
fi
mkdir -p "$out"
exec "$venv/bin/python" benches/plot.py "$csv" "$out"
