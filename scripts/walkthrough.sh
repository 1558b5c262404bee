#!/usr/bin/env bash
# Runs the README's grpcurl walkthrough against a real server and checks every answer.
# Usage: scripts/walkthrough.sh PATH_TO_ENVELOPE_BINARY PATH_TO_GRPCURL
set -euo pipefail
BIN=$1
GRPCURL=$2
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$BIN" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$work/out" 2>/dev/null && break
  sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$ADDR" ] || { cat "$work/log"; echo "server did not start"; exit 1; }

passed=0
: >"$work/failures"
# Failures go to a file: `ok` runs inside $(…), where a counter would be lost.
fail() { echo "FAIL: $*" | tee -a "$work/failures" >&2; }
# expect NAME ACTUAL WANTED: exact equality.
expect() {
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); else fail "$1: expected '$3', got '$2'"; fi
}
# ok NAME GRPCURL-ARGS...: the call must succeed; prints its JSON answer.
ok() {
  local name=$1 out
  shift
  if out=$("$GRPCURL" -plaintext "$@" 2>&1); then printf '%s' "$out"; else fail "$name: $out" >&2; echo '{}'; fi
}
# refused NAME CODE GRPCURL-ARGS...: the call must fail with status CODE.
refused() {
  local name=$1 code=$2 out
  shift 2
  if out=$("$GRPCURL" -plaintext "$@" 2>&1); then
    fail "$name: succeeded: $out"
  else
    expect "$name" "$(sed -n 's/^ *Code: //p' <<<"$out")" "$code"
  fi
}
# field PYTHON-SUBSCRIPT < JSON: one field of a JSON answer ('' if absent).
field() { python3 -c "import json,sys
try: print(json.load(sys.stdin)$1)
except Exception: print('')"; }

services=$(ok list "$ADDR" list | sort | tr '\n' ' ')
expect list "$services" "envelope.v1.Admin envelope.v1.Envelope grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection "
described=$(ok describe "$ADDR" describe envelope.v1.Envelope)
expect describe "$(grep -c '^  rpc Rewrap ( .envelope.v1.RewrapRequest ) returns ( .envelope.v1.RewrapResponse );' <<<"$described")" 1
expect health "$(ok health "$ADDR" grpc.health.v1.Health/Check | field "['status']")" SERVING

# "alice@example.com" in base64, as grpcurl's JSON wants for bytes fields.
PT=$(printf 'alice@example.com' | base64)
CTX='"context":{"table":"users","column":"email"}'
enc=$(ok encrypt -d "{\"key\":\"default\",\"plaintext\":\"$PT\",$CTX}" "$ADDR" envelope.v1.Envelope/Encrypt)
V1=$(field "['keyVersion']" <<<"$enc")
expect encrypt-version-is-a-uuid "$(grep -cE '^[0-9a-f-]{36}$' <<<"$V1")" 1
CT=$(field "['ciphertext']" <<<"$enc")
expect decrypt "$(ok decrypt -d "{\"ciphertext\":\"$CT\",$CTX}" "$ADDR" envelope.v1.Envelope/Decrypt | field "['plaintext']")" "$PT"
refused wrong-context InvalidArgument -d "{\"ciphertext\":\"$CT\",\"context\":{\"table\":\"orders\"}}" "$ADDR" envelope.v1.Envelope/Decrypt
refused unknown-key NotFound -d "{\"key\":\"nope\",\"plaintext\":\"$PT\"}" "$ADDR" envelope.v1.Envelope/Encrypt

batch=$(ok encrypt-batch -d "{\"items\":[{\"plaintext\":\"$PT\",\"context\":{\"row\":\"1\"}},{\"plaintext\":\"$PT\",\"context\":{\"\":\"bad\"}}]}" "$ADDR" envelope.v1.Envelope/EncryptBatch)
expect encrypt-batch-ok "$(field "['results'][0]['keyVersion']" <<<"$batch")" "$V1"
expect encrypt-batch-error "$(field "['results'][1]['error']['code']" <<<"$batch")" 3
BCT=$(field "['results'][0]['ciphertext']" <<<"$batch")
dbatch=$(ok decrypt-batch -d "{\"items\":[{\"ciphertext\":\"$BCT\",\"context\":{\"row\":\"1\"}},{\"ciphertext\":\"AAAA\"}]}" "$ADDR" envelope.v1.Envelope/DecryptBatch)
expect decrypt-batch "$(field "['results'][0]['plaintext']" <<<"$dbatch")" "$PT"
expect decrypt-batch-garbage "$(field "['results'][1]['error']['code']" <<<"$dbatch")" 3

PT2=$(printf 'bob@example.com' | base64)
COL='"context":{"table":"users","column":"email"},"rowField":"id","rowValues":["17","18"]'
col=$(ok encrypt-column -d "{$COL,\"plaintexts\":[\"$PT\",\"$PT2\"]}" "$ADDR" envelope.v1.Envelope/EncryptColumn)
expect encrypt-column "$(field "['keyVersion']" <<<"$col")" "$V1"
C17=$(field "['ciphertexts'][0]" <<<"$col")
C18=$(field "['ciphertexts'][1]" <<<"$col")
dcol=$(ok decrypt-column -d "{$COL,\"ciphertexts\":[\"$C17\",\"$C18\"]}" "$ADDR" envelope.v1.Envelope/DecryptColumn)
expect decrypt-column "$(field "['plaintexts']" <<<"$dcol")" "['$PT', '$PT2']"
expect column-record-unary "$(ok column-record-unary -d "{\"ciphertext\":\"$C17\",\"context\":{\"table\":\"users\",\"column\":\"email\",\"id\":\"17\"}}" "$ADDR" envelope.v1.Envelope/Decrypt | field "['plaintext']")" "$PT"
refused column-record-moved InvalidArgument -d "{\"ciphertext\":\"$C17\",\"context\":{\"table\":\"users\",\"column\":\"email\",\"id\":\"18\"}}" "$ADDR" envelope.v1.Envelope/Decrypt

gdk=$(ok generate-data-key -d '{"context":{"object":"invoice-42.pdf"}}' "$ADDR" envelope.v1.Envelope/GenerateDataKey)
WK=$(field "['wrappedKey']" <<<"$gdk")
PK=$(field "['plaintextKey']" <<<"$gdk")
expect generate-data-key-32-bytes "$(base64 -d <<<"$PK" | wc -c)" 32
expect unwrap-data-key "$(ok unwrap-data-key -d "{\"wrappedKey\":\"$WK\",\"context\":{\"object\":\"invoice-42.pdf\"}}" "$ADDR" envelope.v1.Envelope/UnwrapDataKey | field "['plaintextKey']")" "$PK"

rot=$(ok rotate -d '{"key":"default"}' "$ADDR" envelope.v1.Admin/RotateMasterKey)
expect rotate-previous "$(field "['previousVersion']" <<<"$rot")" "$V1"
NEW=$(field "['currentVersion']" <<<"$rot")
[ -n "$NEW" ] && [ "$NEW" != "$V1" ] && passed=$((passed + 1)) || fail "rotate: new version '$NEW'"
rw=$(ok rewrap -d "{\"ciphertext\":\"$CT\",$CTX}" "$ADDR" envelope.v1.Envelope/Rewrap)
expect rewrap "$(field "['keyVersion']" <<<"$rw")" "$NEW"
RW=$(field "['ciphertext']" <<<"$rw")
expect decrypt-rewrapped "$(ok decrypt-rewrapped -d "{\"ciphertext\":\"$RW\",$CTX}" "$ADDR" envelope.v1.Envelope/Decrypt | field "['plaintext']")" "$PT"
expect decrypt-old "$(ok decrypt-old -d "{\"ciphertext\":\"$CT\",$CTX}" "$ADDR" envelope.v1.Envelope/Decrypt | field "['plaintext']")" "$PT"
stages=$(ok key-status "$ADDR" envelope.v1.Admin/KeyStatus | python3 -c "import json,sys
try: k=json.load(sys.stdin)['keys'][0]
except Exception: k={'versions': []}
print(sorted((v['version'], [s for s in v.get('stages', []) if s.startswith('AWS')]) for v in k['versions']) == sorted([('$V1', ['AWSPREVIOUS']), ('$NEW', ['AWSCURRENT'])]))")
expect key-status "$stages" True
expect refresh "$(ok refresh "$ADDR" envelope.v1.Admin/RefreshKeys | field "['refreshed']")" "['default']"

failed=$(wc -l <"$work/failures")
echo "walkthrough: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
