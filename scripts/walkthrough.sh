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
failed=0
check() { # name, command output, expected substring
  if grep -q -- "$3" <<<"$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1: expected '$3' in:"; echo "$2"; fi
}
g() { "$GRPCURL" -plaintext "$@" 2>&1 || true; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

out=$(g "$ADDR" list)
for s in envelope.v1.Envelope envelope.v1.Admin grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection; do
  check "list $s" "$out" "$s"
done
check describe "$(g "$ADDR" describe envelope.v1.Envelope)" "rpc Rewrap"
check health "$(g "$ADDR" grpc.health.v1.Health/Check)" '"status": "SERVING"'

# "alice@example.com" in base64, as grpcurl's JSON wants for bytes fields.
PT=$(printf 'alice@example.com' | base64)
enc=$(g -d "{\"key\":\"default\",\"plaintext\":\"$PT\",\"context\":{\"table\":\"users\",\"column\":\"email\"}}" "$ADDR" envelope.v1.Envelope/Encrypt)
check encrypt "$enc" '"keyVersion"'
CT=$(json "['ciphertext']" <<<"$enc")
dec=$(g -d "{\"ciphertext\":\"$CT\",\"context\":{\"table\":\"users\",\"column\":\"email\"}}" "$ADDR" envelope.v1.Envelope/Decrypt)
check decrypt "$dec" "\"plaintext\": \"$PT\""
check wrong-context "$(g -d "{\"ciphertext\":\"$CT\",\"context\":{\"table\":\"orders\"}}" "$ADDR" envelope.v1.Envelope/Decrypt)" "InvalidArgument"
check unknown-key "$(g -d "{\"key\":\"nope\",\"plaintext\":\"$PT\"}" "$ADDR" envelope.v1.Envelope/Encrypt)" "NotFound"

batch=$(g -d "{\"items\":[{\"plaintext\":\"$PT\",\"context\":{\"row\":\"1\"}},{\"plaintext\":\"$PT\",\"context\":{\"\":\"bad\"}}]}" "$ADDR" envelope.v1.Envelope/EncryptBatch)
check encrypt-batch "$batch" '"ciphertext"'
check encrypt-batch-error "$batch" '"code": 3'
BCT=$(json "['results'][0]['ciphertext']" <<<"$batch")
check decrypt-batch "$(g -d "{\"items\":[{\"ciphertext\":\"$BCT\",\"context\":{\"row\":\"1\"}},{\"ciphertext\":\"AAAA\"}]}" "$ADDR" envelope.v1.Envelope/DecryptBatch)" "\"plaintext\": \"$PT\""

PT2=$(printf 'bob@example.com' | base64)
COL='"context":{"table":"users","column":"email"},"rowField":"id","rowValues":["17","18"]'
col=$(g -d "{$COL,\"plaintexts\":[\"$PT\",\"$PT2\"]}" "$ADDR" envelope.v1.Envelope/EncryptColumn)
check encrypt-column "$col" '"keyVersion"'
C17=$(json "['ciphertexts'][0]" <<<"$col")
C18=$(json "['ciphertexts'][1]" <<<"$col")
check decrypt-column "$(g -d "{$COL,\"ciphertexts\":[\"$C17\",\"$C18\"]}" "$ADDR" envelope.v1.Envelope/DecryptColumn)" "\"$PT2\""
check column-record-unary "$(g -d "{\"ciphertext\":\"$C17\",\"context\":{\"table\":\"users\",\"column\":\"email\",\"id\":\"17\"}}" "$ADDR" envelope.v1.Envelope/Decrypt)" "\"plaintext\": \"$PT\""
check column-record-moved "$(g -d "{\"ciphertext\":\"$C17\",\"context\":{\"table\":\"users\",\"column\":\"email\",\"id\":\"18\"}}" "$ADDR" envelope.v1.Envelope/Decrypt)" "InvalidArgument"

gdk=$(g -d '{"context":{"object":"invoice-42.pdf"}}' "$ADDR" envelope.v1.Envelope/GenerateDataKey)
check generate-data-key "$gdk" '"wrappedKey"'
WK=$(json "['wrappedKey']" <<<"$gdk")
PK=$(json "['plaintextKey']" <<<"$gdk")
check unwrap-data-key "$(g -d "{\"wrappedKey\":\"$WK\",\"context\":{\"object\":\"invoice-42.pdf\"}}" "$ADDR" envelope.v1.Envelope/UnwrapDataKey)" "\"plaintextKey\": \"$PK\""

rot=$(g -d '{"key":"default"}' "$ADDR" envelope.v1.Admin/RotateMasterKey)
check rotate "$rot" '"currentVersion"'
NEW=$(json "['currentVersion']" <<<"$rot")
rw=$(g -d "{\"ciphertext\":\"$CT\",\"context\":{\"table\":\"users\",\"column\":\"email\"}}" "$ADDR" envelope.v1.Envelope/Rewrap)
check rewrap "$rw" "\"keyVersion\": \"$NEW\""
check decrypt-old "$(g -d "{\"ciphertext\":\"$CT\",\"context\":{\"table\":\"users\",\"column\":\"email\"}}" "$ADDR" envelope.v1.Envelope/Decrypt)" "\"plaintext\": \"$PT\""
check key-status "$(g "$ADDR" envelope.v1.Admin/KeyStatus)" '"AWSPREVIOUS"'
check refresh "$(g "$ADDR" envelope.v1.Admin/RefreshKeys)" '"default"'

echo "walkthrough: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
