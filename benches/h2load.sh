#!/usr/bin/env bash
# h2load (Debian package nghttp2-client) as an independent load generator:
# the release server pinned to core 1, h2load to core 0.
#
# 1. Unary: the empty RPC (grpc.health Check) and Encrypt of a 64-byte record,
#    interleaved, RUNS times each (4 connections x 64 streams), with the
#    server's CPU time over each run (its core saturated is near 1.00), and
#    the median ratio.
# 2. Bulk, 1,000 x 64-byte values per call (4 connections x 4 calls in flight):
#    EncryptBatch (no context), EncryptColumn and DecryptColumn (a shared
#    context and a row id per value), RUNS times each, interleaved.
# 3. Open loop at half the Encrypt rate: the empty RPC and Encrypt, with each
#    call's latency from h2load's per-request log: p50/p99/p99.9.
# h2load counts HTTP statuses only; the audit log confirms every call's gRPC
# status.
# Usage: benches/h2load.sh [requests] [runs]   (run `cargo build --release` first)
# ENVELOPE_H2LOAD_CONFIG=FILE serves with that configuration (for example
# `[audit]` `output = "off"`, to see what the audit line costs).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
runs=${2:-5}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/envelope/target}/release/envelope
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
config=()
[ -n "${ENVELOPE_H2LOAD_CONFIG:-}" ] && config=(--config "$ENVELOPE_H2LOAD_CONFIG")
taskset -c 1 "$bin" serve "${config[@]}" --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do grep -q '^listening on ' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/out")
python3 benches/h2load-bodies.py "$work"
"$bin" encrypt --addr "$addr" --column --row-field row --context table=users --context column=email \
  <"$work/column-input.txt" >"$work/records.txt"
python3 benches/h2load-bodies.py "$work" "$work/records.txt"
tck=$(getconf CLK_TCK)
cpu() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$pid/stat"; }

# run NAME PATH BODY REQUESTS STREAMS [h2load flags]: one h2load run; prints
# "NAME req/s cpu" where cpu is the server's CPU seconds per second of run.
run() {
  local name=$1 path=$2 data=$3 requests=$4 streams=$5
  shift 5
  local before after rate secs
  before=$(cpu)
  taskset -c 0 h2load -n "$requests" -c 4 -m "$streams" -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$work/$data" "$@" "http://$addr$path" >"$work/last"
  after=$(cpu)
  grep -q " 0 failed, 0 errored" "$work/last" || { cat "$work/last" >&2; exit 1; }
  rate=$(sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$work/last")
  # h2load prints "finished in 254.28ms," or "finished in 1.52s,".
  secs=$(sed -n 's/^finished in \([0-9.]*\)\(m*\)s,.*/\1 \2/p' "$work/last" | awk '{ print ($2 == "m") ? $1 / 1000 : $1 }')
  printf '%s %s %s\n' "$name" "$rate" "$(awk -v a="$before" -v b="$after" -v s="$secs" 'BEGIN { printf "%.2f", (b - a) / s }')"
}

echo "== unary, $runs interleaved runs of $n calls: calls/s and the server's CPU (cores)"
for i in $(seq 1 "$runs"); do
  run empty /grpc.health.v1.Health/Check empty.bin "$n" 64
  run encrypt /envelope.v1.Envelope/Encrypt encrypt.bin "$n" 64
done | tee "$work/unary"
echo "== bulk, $runs interleaved runs of $((n / 100)) calls of 1,000 values: calls/s and the server's CPU"
for i in $(seq 1 "$runs"); do
  run EncryptBatch /envelope.v1.Envelope/EncryptBatch batch.bin $((n / 100)) 4
  run EncryptColumn /envelope.v1.Envelope/EncryptColumn column.bin $((n / 100)) 4
  run DecryptColumn /envelope.v1.Envelope/DecryptColumn decrypt-column.bin $((n / 100)) 4
done | tee "$work/bulk"
python3 - "$work/unary" "$work/bulk" <<'PY'
import statistics, sys
def load(p):
    rows = {}
    for l in open(p):
        name, rate, cpu = l.split()
        rows.setdefault(name, []).append((float(rate), float(cpu)))
    return rows
u = load(sys.argv[1])
ratios = [e[0] / m[0] for m, e in zip(u["empty"], u["encrypt"])]
print("unary Encrypt / empty RPC per run: " + ", ".join(f"{r:.2f}" for r in ratios)
      + f"; median {statistics.median(ratios):.2f}")
for name in ("empty", "encrypt"):
    print(f"  {name}: median {statistics.median(r for r, _ in u[name]):,.0f} calls/s,"
          f" server CPU median {statistics.median(c for _, c in u[name]):.2f} cores")
for name, rows in load(sys.argv[2]).items():
    print(f"{name}: median {statistics.median(r for r, _ in rows) * 1000 / 1e6:.2f} M records/s"
          f" (runs: {', '.join(f'{r * 1000 / 1e6:.2f}' for r, _ in rows)}),"
          f" server CPU median {statistics.median(c for _, c in rows):.2f} cores")
PY

rate=$(awk '$1 == "encrypt" { print $2 }' "$work/unary" | sort -n | awk '{ a[NR] = $1 } END { print int(a[int((NR + 1) / 2)]) }')
half=$((rate / 2))
paced_n=$((half * 5))
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
echo "== empty RPC, open loop at $half calls/s (half the median Encrypt rate)"
run empty /grpc.health.v1.Health/Check empty.bin "$paced_n" 64 --rps=$((half / 4)) --log-file="$work/paced-empty.log" >/dev/null
pctl "$work/paced-empty.log"
echo "== Encrypt, 64-byte record, open loop at $half calls/s"
run encrypt /envelope.v1.Envelope/Encrypt encrypt.bin "$paced_n" 64 --rps=$((half / 4)) --log-file="$work/paced.log" >/dev/null
pctl "$work/paced.log"
sleep 0.5
ok() { grep -c "\"rpc\":\"$1\".*\"code\":\"OK\"" "$work/out" || true; }
echo "audit lines with code OK: Encrypt $(ok Encrypt) (expected $((n * runs + paced_n))), EncryptBatch $(ok EncryptBatch), EncryptColumn $(ok EncryptColumn) (expected $((n / 100 * runs + 1))), DecryptColumn $(ok DecryptColumn)"
