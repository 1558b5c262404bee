#!/usr/bin/env bash
# Builds Envelope's own cryptography on aws-lc-rs's FIPS 140-3 module (the
# `fips` feature) and runs the primitives' tests and the power-on self-test
# on it. Not part of ./scripts/test: it rebuilds the TLS and AWS SDK crates
# against the FIPS module (about six minutes on the 2-core dev VM).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v go >/dev/null || ! command -v cmake >/dev/null; then
  apt-get update -qq && apt-get install -y -qq golang-go cmake
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/envelope/target-fips}
cargo test --locked --features fips --lib primitives::
