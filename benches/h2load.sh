#!/usr/bin/env bash
# h2load (Debian package nghttp2-client) as an independent load generator for
# the unary path: the release server pinned to core 1, h2load to core 0, the
# same connections and streams for an empty RPC (grpc.health Check) and for
# Encrypt of a 64-byte record. h2load counts HTTP statuses only; the audit log
# confirms every call's gRPC status.
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
  taskset -c 0 h2load -n "$n" -c 4 -m 64 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$work/$2" "http://$addr$1" | grep -E 'finished in|requests:|time for request:'
}
echo "== empty RPC (grpc.health.v1.Health/Check)"; run /grpc.health.v1.Health/Check empty.bin
echo "== Encrypt, 64-byte record"; run /envelope.v1.Envelope/Encrypt encrypt.bin
sleep 0.5
echo "audit lines with code OK for Encrypt: $(grep -c '"rpc":"Encrypt".*"code":"OK"' "$work/out" || true) of $n"
