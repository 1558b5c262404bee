#!/usr/bin/env bash
# The API under buf (proto/buf.yaml): lint with buf's STANDARD rules, and no
# breaking change (FILE rules) against proto/api-image.binpb, the released
# API. Then the proof that the breaking check bites: a copy of the proto
# with a field renumbered and an RPC removed must fail it.
# After a deliberate, compatible-by-intent change to the API, rebuild the
# image: (cd proto && buf build -o api-image.binpb).
# Usage: scripts/check-api.sh BUF   (the buf binary)
set -euo pipefail
buf=$1
cd "$(dirname "$0")/../proto"
"$buf" lint
"$buf" breaking --against api-image.binpb
echo "buf lint: clean; buf breaking: no change against api-image.binpb"

image=$PWD/api-image.binpb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r buf.yaml envelope "$tmp/"
sed -i -e 's/^  string key = 1;/  string key = 9;/' -e '/rpc RefreshKeys(/d' "$tmp/envelope/v1/envelope.proto"
if out=$(cd "$tmp" && "$buf" breaking --against "$image" 2>&1); then
  echo "buf breaking passed a renumbered field and a removed RPC" >&2
  exit 1
fi
grep -q 'field "1" with name "key"' <<<"$out" && grep -q 'RefreshKeys' <<<"$out" || {
  echo "buf breaking failed, but not on the planted changes:" >&2
  echo "$out" >&2
  exit 1
}
echo "buf breaking catches a planted change: $(grep -c . <<<"$out") findings"
