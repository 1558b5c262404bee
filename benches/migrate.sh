#!/usr/bin/env bash
# `envelope migrate` rates on a throwaway PostgreSQL (Debian's binaries, as
# the tests use) and the release server pinned to core 1; the migrator and
# PostgreSQL share core 0. ROWS rows of e-mail addresses sealed as a column
# with row ids, then RUNS rounds of, each after a rotation:
#   rewrap, re-encrypt (--reencrypt), rewrap --max-rate RATE, re-encrypt
#   --max-rate RATE,
# and finally a compromised version: `envelope compromise` on the version
# the column is under, then a default run (every rewrap refused and
# re-encrypted). Each run prints migrate's summary line (rows/s) and the
# column's records per version (`--dry-run`) before and after.
# Usage: benches/migrate.sh [rows] [runs] [rate]   (cargo build --release first)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000}
runs=${2:-3}
rate=${3:-20000}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/envelope/target}/release/envelope
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
cleanup() {
  kill "${pid:-}" 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" taskset -c 0 "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $work -c fsync=off" start >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
psql() { "$pgbin/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres postgres "$@"; }

mkdir -m 700 "$work/data"
taskset -c 1 "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do grep -q '^listening on ' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/out")

seq 1 "$rows" | awk '{ printf "%d\tuser%d@example.com\n", $1, $1 }' >"$work/plain.tsv"
"$bin" encrypt --addr "$addr" --column --row-field id --context table=users --context column=email \
  <"$work/plain.tsv" >"$work/sealed.tsv"
psql -c "CREATE TABLE users (id bigint PRIMARY KEY, email bytea); CREATE TABLE raw (id bigint, b64 text);"
psql -c "\\copy raw FROM '$work/sealed.tsv'"
psql -c "INSERT INTO users SELECT id, decode(b64, 'base64') FROM raw; DROP TABLE raw;"
psql -c "VACUUM ANALYZE users;"

migrate() {
  taskset -c 0 "$bin" migrate --addr "$addr" --table users --id-column id --column email \
    --context table=users --context column=email --row-field id "$@"
}
debt() { migrate --dry-run | tr '\n' ';'; echo; }
step() {
  local name=$1
  shift
  "$bin" rotate --addr "$addr" --key default >/dev/null
  echo "== $name"
  echo "before: $(debt)"
  migrate "$@" 2>/dev/null | grep '^scanned'
  echo "after:  $(debt)"
}
for r in $(seq 1 "$runs"); do
  echo "#### round $r"
  step rewrap
  step reencrypt --reencrypt
  step "rewrap --max-rate $rate" --max-rate "$rate"
  step "reencrypt --max-rate $rate" --reencrypt --max-rate "$rate"
done
old=$("$bin" status --addr "$addr" --key default | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["current_version"])')
echo "== compromised: $old"
"$bin" compromise --addr "$addr" --key default --version "$old" --reason "benches/migrate.sh drill" | head -2
echo "before: $(debt)"
migrate 2>/dev/null | grep '^scanned'
echo "after:  $(debt)"
