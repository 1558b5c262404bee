#!/usr/bin/env bash
# h2load (Debian package nghttp2-client) as an independent load generator for
# the unary path: the release server pinned to core 1, h2load to core 0, the
# same connections and streams for an empty RPC (grpc.health Check) and for
# Encrypt of a 64-byte record. h2load counts HTTP statuses only; the audit log
# confirms every call's gRPC status. Then the empty RPC and Encrypt again,
# open loop at half the Encrypt rate just measured (h2load --rps), with each
# call's latency from h2load's per-request log: p50/p99/p99.9.
# Usage: benches/h2load.sh [requests]   (run `cargo build --release` first)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/envelope/target}/release/envelope
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c 1 "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do grep -q '^listening on ' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/out")
# gRPC frames: 1 byte flags, 4 bytes length, then the protobuf message.
python3 - "$work" <<'PY'
import struct, sys
w = sys.argv[1]
open(f"{w}/empty.bin", "wb").write(b"\x00" + struct.pack(">I", 0))
msg = bytes([0x12, 64]) + b"\x5a" * 64          # EncryptRequest{plaintext: 64 bytes}
open(f"{w}/encrypt.bin", "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY
run() {
  local path=$1 data=$2
  shift 2
  taskset -c 0 h2load -n "$n" -c 4 -m 64 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$work/$data" "$@" "http://$addr$path" | tee "$work/last" | grep -E 'finished in|requests:|time for request:'
}
echo "== empty RPC (grpc.health.v1.Health/Check)"; run /grpc.health.v1.Health/Check empty.bin
echo "== Encrypt, 64-byte record"; run /envelope.v1.Envelope/Encrypt encrypt.bin
rate=$(sed -n 's/.*finished in [^,]*, \([0-9]*\)\..* req\/s.*/\1/p' "$work/last")
half=$((rate / 2))
n=$((half * 5))
pctl() {
  python3 - "$1" <<'PY'
import sys
us = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip())
q = lambda p: us[min(len(us) - 1, int(p * len(us)))]
print(f"latency over {len(us)} calls: p50 {q(0.5)} µs, p99 {q(0.99)} µs, p99.9 {q(0.999)} µs, max {us[-1]} µs")
PY
}
# The same open-loop load on the empty RPC: h2load's pacing and this
# machine's scheduling add their own tail, which the empty RPC shows too.
echo "== empty RPC, open loop at $half calls/s (half the Encrypt rate above)"
run /grpc.health.v1.Health/Check empty.bin --rps=$((half / 4)) --log-file="$work/paced-empty.log"
pctl "$work/paced-empty.log"
echo "== Encrypt, 64-byte record, open loop at $half calls/s"
run /envelope.v1.Envelope/Encrypt encrypt.bin --rps=$((half / 4)) --log-file="$work/paced.log"
pctl "$work/paced.log"
sleep 0.5
echo "audit lines with code OK for Encrypt: $(grep -c '"rpc":"Encrypt".*"code":"OK"' "$work/out" || true) (closed loop ${1:-200000} + open loop $n)"
