#!/usr/bin/env bash
# Installs the peers (Tink, the AWS Encryption SDK for Python) into a
# virtualenv on first use and runs benches/peers/peers.py on one core.
# Usage: benches/peers/run.sh [seconds-per-case]
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${ENVELOPE_CACHE:-$HOME/.cache/envelope}/peers
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'tink==1.16.1' 'aws-encryption-sdk==4.0.7'
fi
exec taskset -c 0 "$venv/bin/python" benches/peers/peers.py "${1:-2}"
